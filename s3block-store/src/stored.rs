//! [`StoredTally`]: how many objects and bytes a volume holds in its
//! bucket, known to a running mount without listing the bucket each time
//! someone looks.
//!
//! The figure starts from a baseline: nothing, for a volume the mount has
//! just created, else one listing of the bucket (the one `--list-blocks`
//! makes at the start, or one in the background after the start). From
//! then on it follows every block the mount stores: a PUT sets its block's
//! object size, a DELETE (a block written as zeros, a discard) removes it.
//!
//! To know what a PUT replaces, the tally keeps each stored block's object
//! size, as runs of consecutive blocks of one size: the objects of an
//! uncompressed volume all have one size, so a written extent is one run
//! however long it is; a compressed block is usually a run of its own. At
//! most [`MAX_RUNS`] runs are kept (a few MiB); past that the figure stops
//! following and says so, and `s3block info` lists the bucket instead.
//!
//! A block stored or deleted while the background listing runs keeps what
//! the mount stored, whatever the listing finds for it later: the listing
//! only adds the blocks the mount has not touched.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use futures::TryStreamExt;
use object_store::ObjectStore;
use s3block_core::{BlockId, KeyLayout, Result};

use crate::error::store_error;
use crate::list::list_root;

/// The most runs of equal-sized objects a tally keeps (about 40 bytes
/// each: 5 MiB at most).
pub const MAX_RUNS: usize = 1 << 17;

/// Keys a LIST request returns at most: a listing of `n` keys is
/// `n / 1000 + 1` requests.
const LIST_PAGE: u64 = 1000;

/// How the stored figure was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StoredSource {
    /// Nothing counted (a command that does not follow its writes).
    #[default]
    Off,
    /// The volume was created empty by this mount; every block stored since is counted.
    Created,
    /// The listing that gives the baseline is running: the figure is partial.
    Listing,
    /// Counted by a listing, then followed.
    Listed,
    /// The listing failed: the figure is unknown.
    Failed,
    /// More runs than [`MAX_RUNS`]: the figure is that of the moment it
    /// stopped following.
    Unfollowed,
}

impl StoredSource {
    /// The name in the stats (`created`, `listing`, `listed`, `failed`,
    /// `unfollowed`, `off`).
    pub fn name(self) -> &'static str {
        match self {
            StoredSource::Off => "off",
            StoredSource::Created => "created",
            StoredSource::Listing => "listing",
            StoredSource::Listed => "listed",
            StoredSource::Failed => "failed",
            StoredSource::Unfollowed => "unfollowed",
        }
    }
}

/// The tally at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct StoredCount {
    /// How the figure was obtained.
    pub source: StoredSource,
    /// Block objects in the bucket.
    pub objects: u64,
    /// Bytes of those objects.
    pub bytes: u64,
    /// When the baseline was taken: the volume created, or the listing started.
    pub baseline_at: Option<SystemTime>,
    /// How long the baseline listing took (none while it runs, or without one).
    pub listing_secs: Option<f64>,
    /// LIST requests the baseline listing made (one per 1000 keys).
    pub listing_requests: u64,
    /// Why the listing failed, or why the figure stopped following.
    pub note: Option<String>,
}

/// Stored objects and bytes of one volume, shared by the clones of its
/// device. Inert (every event ignored) until a baseline is started.
#[derive(Debug, Default)]
pub struct StoredTally {
    inner: Mutex<Tally>,
}

#[derive(Debug, Default)]
struct Tally {
    source: StoredSource,
    runs: Runs,
    objects: u64,
    bytes: u64,
    /// While listing: the blocks the mount stored or deleted (size 1).
    touched: Runs,
    baseline_at: Option<SystemTime>,
    listing_started: Option<Instant>,
    listing_secs: Option<f64>,
    listing_requests: u64,
    note: Option<String>,
}

impl Tally {
    fn following(&self) -> bool {
        matches!(self.source, StoredSource::Created | StoredSource::Listing | StoredSource::Listed)
    }

    /// Sets `blocks` to `size` (0: no object), keeping the totals.
    fn set(&mut self, blocks: Range<u64>, size: u64) {
        let (objects, bytes) = self.runs.set_range(blocks.clone(), size);
        let n = blocks.end - blocks.start;
        self.objects = self.objects - objects + if size > 0 { n } else { 0 };
        self.bytes = self.bytes - bytes + if size > 0 { n * size } else { 0 };
    }

    /// The mount stored or deleted `blocks`.
    fn record(&mut self, blocks: Range<u64>, size: u64) {
        if !self.following() {
            return;
        }
        self.set(blocks.clone(), size);
        if self.source == StoredSource::Listing {
            self.touched.set_range(blocks, 1);
        }
        self.check_runs();
    }

    /// Stops following once the runs are more than [`MAX_RUNS`].
    fn check_runs(&mut self) {
        if self.runs.len() > MAX_RUNS || self.touched.len() > MAX_RUNS {
            let listing = self.source == StoredSource::Listing;
            self.source = if listing { StoredSource::Failed } else { StoredSource::Unfollowed };
            self.note = Some(format!(
                "{} at {}: the stored objects form more than {} runs of equal size, more than the mount \
                 follows in memory; `s3block info` lists the bucket",
                if listing { "stopped counting" } else { "stopped following" },
                crate::lock::utc_stamp(SystemTime::now()),
                MAX_RUNS
            ));
            self.runs = Runs::default();
            self.touched = Runs::default();
        }
    }
}

impl StoredTally {
    /// A tally that counts nothing until a baseline is started.
    pub fn new() -> Self {
        StoredTally::default()
    }

    fn lock(&self) -> MutexGuard<'_, Tally> {
        // The tally is plain numbers: a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Baseline: the volume is empty now (this mount created it).
    pub fn start_empty(&self) {
        let mut t = self.lock();
        *t =
            Tally { source: StoredSource::Created, baseline_at: Some(SystemTime::now()), ..Tally::default() };
    }

    /// Baseline: a listing starts now; feed it with [`listed`](Self::listed)
    /// and end it with [`end_listing`](Self::end_listing) or
    /// [`fail_listing`](Self::fail_listing). Blocks stored meanwhile are
    /// followed, and the listing's word on them ignored.
    pub fn begin_listing(&self) {
        let mut t = self.lock();
        *t = Tally {
            source: StoredSource::Listing,
            baseline_at: Some(SystemTime::now()),
            listing_started: Some(Instant::now()),
            ..Tally::default()
        };
    }

    /// The listing found `block` stored in an object of `size` bytes.
    pub fn listed(&self, block: BlockId, size: u64) {
        let mut t = self.lock();
        let b = u64::from(block.0);
        if t.source == StoredSource::Listing && t.touched.get(b) == 0 {
            t.set(b..b + 1, size);
            t.check_runs();
        }
    }

    /// The listing is complete; it made `requests` LIST requests.
    pub fn end_listing(&self, requests: u64) {
        let mut t = self.lock();
        if t.source == StoredSource::Listing {
            t.source = StoredSource::Listed;
            t.listing_secs = t.listing_started.map(|s| s.elapsed().as_secs_f64());
            t.listing_requests = requests;
            t.touched = Runs::default();
        }
    }

    /// The listing failed: the figure is unknown.
    pub fn fail_listing(&self, why: &str) {
        let mut t = self.lock();
        if t.source == StoredSource::Listing {
            t.source = StoredSource::Failed;
            t.note = Some(format!("the listing failed: {why}"));
            t.runs = Runs::default();
            t.touched = Runs::default();
        }
    }

    /// The mount stored `block` in an object of `size` bytes.
    pub fn stored(&self, block: BlockId, size: u64) {
        let b = u64::from(block.0);
        self.lock().record(b..b + 1, size);
    }

    /// The mount deleted the objects of `blocks` (absent ones included).
    pub fn deleted(&self, blocks: Range<u64>) {
        self.lock().record(blocks, 0);
    }

    /// The figures now.
    pub fn count(&self) -> StoredCount {
        let t = self.lock();
        StoredCount {
            source: t.source,
            objects: t.objects,
            bytes: t.bytes,
            baseline_at: t.baseline_at,
            listing_secs: t.listing_secs,
            listing_requests: t.listing_requests,
            note: t.note.clone(),
        }
    }

    /// Counts the blocks of `layout` below `block_count` in `store` with
    /// one listing, page by page (nothing of it is kept but the runs), as
    /// the baseline [`begin_listing`](Self::begin_listing) started. A
    /// failure is recorded in the tally and returned.
    pub async fn count_by_listing(
        &self,
        store: &dyn ObjectStore,
        layout: &KeyLayout,
        block_count: u64,
    ) -> Result<()> {
        let mut keys = 0u64;
        let result: Result<()> = async {
            let root = list_root(layout.prefix())?;
            let mut stream = store.list(root.as_ref());
            while let Some(meta) = stream
                .try_next()
                .await
                .map_err(|e| store_error(e, &format!("listing of {}", layout.prefix()), None))?
            {
                keys += 1;
                if let Some(block) = layout.parse(meta.location.as_ref())
                    && u64::from(block.0) < block_count
                {
                    self.listed(block, meta.size);
                }
            }
            Ok(())
        }
        .await;
        match &result {
            Ok(()) => self.end_listing(keys / LIST_PAGE + 1),
            Err(e) => self.fail_listing(&e.to_string()),
        }
        result
    }
}

/// Runs of consecutive blocks with objects of one size.
#[derive(Debug, Default)]
struct Runs {
    /// start -> (end, object size); runs never overlap, sizes are never 0.
    map: BTreeMap<u64, (u64, u64)>,
}

impl Runs {
    fn len(&self) -> usize {
        self.map.len()
    }

    /// The object size of block `b` (0: none).
    fn get(&self, b: u64) -> u64 {
        match self.map.range(..=b).next_back() {
            Some((_, &(end, size))) if b < end => size,
            _ => 0,
        }
    }

    /// Sets every block of `r` to `size` (0: no object); returns the objects
    /// and bytes `r` held before.
    fn set_range(&mut self, r: Range<u64>, size: u64) -> (u64, u64) {
        if r.is_empty() {
            return (0, 0);
        }
        // A run from before `r` into it is cut at its start.
        if let Some((&s, &(e, sz))) = self.map.range(..r.start).next_back()
            && e > r.start
        {
            self.map.insert(s, (r.start, sz));
            self.map.insert(r.start, (e, sz));
        }
        let (mut objects, mut bytes) = (0, 0);
        while let Some((&s, &(e, sz))) = self.map.range(r.start..r.end).next() {
            self.map.remove(&s);
            let n = e.min(r.end) - s;
            objects += n;
            bytes += n * sz;
            if e > r.end {
                self.map.insert(r.end, (e, sz));
            }
        }
        if size > 0 {
            let (mut start, mut end) = (r.start, r.end);
            if let Some((&s, &(e, sz))) = self.map.range(..start).next_back()
                && e == start
                && sz == size
            {
                self.map.remove(&s);
                start = s;
            }
            if let Some(&(e, sz)) = self.map.get(&end)
                && sz == size
            {
                self.map.remove(&end);
                end = e;
            }
            self.map.insert(start, (end, size));
        }
        (objects, bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use bytes::Bytes;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ObjectStoreExt, PutPayload};
    use std::collections::HashMap;

    /// A tally and a model (block -> size) driven by the same events.
    fn check(t: &StoredTally, model: &HashMap<u64, u64>) {
        let c = t.count();
        assert_eq!(c.objects, model.len() as u64, "{c:?}");
        assert_eq!(c.bytes, model.values().sum::<u64>(), "{c:?}");
        let inner = t.lock();
        for (&b, &size) in model {
            assert_eq!(inner.runs.get(b), size, "block {b}");
        }
    }

    #[test]
    fn uploads_and_deletes_move_the_figure_by_what_they_replace() {
        let t = StoredTally::new();
        t.stored(BlockId(1), 100);
        assert_eq!(t.count().objects, 0, "inert before a baseline");
        t.start_empty();
        let mut model = HashMap::new();
        // A filled extent of one size is one run.
        for b in 0..1000u64 {
            t.stored(BlockId(b as u32), 4096);
            model.insert(b, 4096);
        }
        assert_eq!(t.lock().runs.len(), 1);
        check(&t, &model);
        // An overwrite with another size splits it; writing it back merges.
        t.stored(BlockId(500), 300);
        model.insert(500, 300);
        check(&t, &model);
        assert_eq!(t.lock().runs.len(), 3);
        t.stored(BlockId(500), 4096);
        model.insert(500, 4096);
        check(&t, &model);
        assert_eq!(t.lock().runs.len(), 1);
        // A zero block and a discard across the end of the extent.
        t.deleted(7..8);
        model.remove(&7);
        t.deleted(990..5000);
        for b in 990..1000 {
            model.remove(&b);
        }
        check(&t, &model);
        assert_eq!(t.count().source, StoredSource::Created);
    }

    #[test]
    fn random_events_match_a_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(18);
        let t = StoredTally::new();
        t.start_empty();
        let mut model: HashMap<u64, u64> = HashMap::new();
        for _ in 0..5000 {
            let b = rng.random_range(0..200u64);
            match rng.random_range(0..10) {
                0 => {
                    let end = b + rng.random_range(1..30);
                    t.deleted(b..end);
                    model.retain(|k, _| !(b..end).contains(k));
                }
                1..=3 => {
                    t.deleted(b..b + 1);
                    model.remove(&b);
                }
                _ => {
                    let size = [100, 4096, 4096, 4096, 7][rng.random_range(0..5)];
                    t.stored(BlockId(b as u32), size);
                    model.insert(b, size);
                }
            }
        }
        check(&t, &model);
    }

    #[test]
    fn the_listing_adds_only_blocks_the_mount_did_not_touch() {
        let t = StoredTally::new();
        t.begin_listing();
        // Stored before the listing reached it: the listing's older size is ignored.
        t.stored(BlockId(3), 50);
        // Deleted before the listing reached it: the listing's object is gone.
        t.deleted(4..5);
        t.listed(BlockId(3), 4096);
        t.listed(BlockId(4), 4096);
        t.listed(BlockId(5), 4096);
        // Stored after the listing saw it: replaces the listed size.
        t.stored(BlockId(5), 10);
        t.end_listing(1);
        let c = t.count();
        assert_eq!((c.source, c.objects, c.bytes, c.listing_requests), (StoredSource::Listed, 2, 60, 1));
        assert!(c.baseline_at.is_some() && c.listing_secs.is_some());
        t.deleted(0..10);
        assert_eq!((t.count().objects, t.count().bytes), (0, 0));
    }

    #[test]
    fn too_many_runs_stop_following_and_say_so() {
        let t = StoredTally::new();
        t.start_empty();
        // Every other block: one run each.
        for b in 0..=MAX_RUNS as u32 {
            t.stored(BlockId(b * 2), 4096);
        }
        let c = t.count();
        assert_eq!(c.source, StoredSource::Unfollowed);
        assert_eq!(c.objects, MAX_RUNS as u64 + 1);
        assert!(c.note.unwrap().contains("s3block info"));
        assert_eq!(t.lock().runs.len(), 0, "the runs are dropped");
        t.stored(BlockId(1), 4096);
        assert_eq!(t.count().objects, MAX_RUNS as u64 + 1, "no longer followed");
    }

    #[tokio::test]
    async fn counting_by_listing_skips_other_keys_and_blocks_past_the_end() {
        let store = InMemory::new();
        let layout = KeyLayout::new("vol/", false);
        for (key, len) in [
            (layout.key(BlockId(0)), 10),
            (layout.key(BlockId(9)), 20),
            (layout.key(BlockId(100)), 40),
            ("vol/s3block-volume.json".to_owned(), 80),
            ("other/00000001".to_owned(), 160),
        ] {
            let body = PutPayload::from(Bytes::from(vec![1u8; len]));
            store.put(&Path::from(key), body).await.unwrap();
        }
        let t = StoredTally::new();
        t.begin_listing();
        t.count_by_listing(&store, &layout, 100).await.unwrap();
        let c = t.count();
        assert_eq!((c.source, c.objects, c.bytes, c.listing_requests), (StoredSource::Listed, 2, 30, 1));
    }
}
