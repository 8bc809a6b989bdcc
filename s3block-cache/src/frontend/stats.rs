//! The stats files: what a frontend has done and cost so far, for people
//! (`stats`) and for scripts (`stats.json`).
//!
//! Both come from one [`MountStats`] (so `s3block stats` reads the same
//! struct back): [`Stats`] fills it from the cache's statistics and the
//! store's request counters, renders the text file from it and serialises
//! it to JSON. The mount shows both files in its mount point (unlinking
//! either calls [`StatsSource::reset`]); a frontend without a file system
//! of its own writes them with [`write_stats_files`]. The JSON schema is in
//! `docs/STATS.md`.

use std::path::Path;
use std::sync::Arc;

use s3block_core::{RequestCounters, RequestCounts};

use super::service::StatusFigures;
use crate::{CacheStats, DiskFigures, MountStats, StoredFigures};

pub use s3block_store::{GET_PRICE_PER_1000, PUT_PRICE_PER_1000};
use s3block_store::{STORAGE_PRICE_PER_GB_MONTH, StoredSource, StoredTally, utc_stamp};

/// Produces the stats files' contents and resets the counters behind them.
pub trait StatsSource: Send + Sync {
    /// The current text of the stats file.
    fn render(&self) -> String;
    /// The current statistics as JSON (the `stats.json` file beside the
    /// stats file); an empty object for a source without typed figures.
    fn render_json(&self) -> String {
        "{}\n".to_owned()
    }
    /// Sets the counters back to zero (a stats file was unlinked).
    fn reset(&self);
    /// What the service's status line shows (see [`Service`](super::Service));
    /// nothing waiting by default.
    fn status(&self) -> StatusFigures {
        StatusFigures::default()
    }
}

type Snapshot = Box<dyn Fn() -> CacheStats + Send + Sync>;
type Reset = Box<dyn Fn() + Send + Sync>;
type DiskSnapshot = Box<dyn Fn() -> DiskFigures + Send + Sync>;

/// The mount's statistics: the cache's figures and the store's request
/// counters with their cost at list prices.
#[derive(Default)]
pub struct Stats {
    cache: Option<(Snapshot, Reset)>,
    requests: Option<Arc<RequestCounters>>,
    disk: Option<DiskSnapshot>,
    stored: Option<Arc<StoredTally>>,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("cache", &self.cache.is_some())
            .field("requests", &self.requests)
            .field("disk", &self.disk.is_some())
            .field("stored", &self.stored)
            .finish()
    }
}

impl Stats {
    /// Stats with nothing in them yet.
    pub fn new() -> Self {
        Stats::default()
    }

    /// Adds the store's request counters, shown with their cost at list prices.
    pub fn with_requests(mut self, counters: Arc<RequestCounters>) -> Self {
        self.requests = Some(counters);
        self
    }

    /// Adds the cache: `snapshot` gives its statistics, `reset` zeroes its counters.
    pub fn with_cache(
        mut self,
        snapshot: impl Fn() -> CacheStats + Send + Sync + 'static,
        reset: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        self.cache = Some((Box::new(snapshot), Box::new(reset)));
        self
    }

    /// Adds the disk cache: `snapshot` gives its figures.
    pub fn with_disk(mut self, snapshot: impl Fn() -> DiskFigures + Send + Sync + 'static) -> Self {
        self.disk = Some(Box::new(snapshot));
        self
    }

    /// Adds the volume's stored objects and bytes, shown with their cost a
    /// month at list price.
    pub fn with_stored(mut self, tally: Arc<StoredTally>) -> Self {
        self.stored = Some(tally);
        self
    }

    /// The statistics now.
    pub fn snapshot(&self) -> MountStats {
        let cache = self.cache.as_ref().map(|(snapshot, _)| snapshot()).unwrap_or_default();
        let requests = self.requests.as_ref().map(|c| c.snapshot()).unwrap_or_default();
        let mut stats = MountStats::new(&cache, &requests, PUT_PRICE_PER_1000, GET_PRICE_PER_1000);
        stats.disk = self.disk.as_ref().map(|snapshot| snapshot());
        match self.stored.as_ref().map(|t| t.count()) {
            Some(c) if c.source != StoredSource::Off => {
                stats.with_stored(stored_figures(&c), STORAGE_PRICE_PER_GB_MONTH)
            }
            _ => stats,
        }
    }
}

/// The stats' view of a [`StoredTally`]'s count.
fn stored_figures(c: &s3block_store::StoredCount) -> StoredFigures {
    StoredFigures {
        source: c.source.name().to_owned(),
        objects: c.objects,
        bytes: c.bytes,
        baseline_at: c.baseline_at.map(utc_stamp),
        listing_millis: c.listing_secs.map(|s| (s * 1000.0).round() as u64),
        listing_requests: c.listing_requests,
        note: c.note.clone(),
    }
}

impl StatsSource for Stats {
    fn render(&self) -> String {
        self.snapshot().render_text()
    }

    fn render_json(&self) -> String {
        // Plain numbers and strings: serialising cannot fail.
        let mut json = serde_json::to_string_pretty(&self.snapshot()).unwrap_or_else(|_| "{}".to_owned());
        json.push('\n');
        json
    }

    fn status(&self) -> StatusFigures {
        let cache = self.cache.as_ref().map(|(snapshot, _)| snapshot()).unwrap_or_default();
        let disk = self.disk.as_ref().map(|snapshot| snapshot());
        StatusFigures {
            dirty_blocks: cache.dirty_blocks,
            dirty_bytes: cache.dirty_bytes,
            uploads_in_flight: cache.uploads_in_flight,
            disk_unstored_blocks: disk.as_ref().map_or(0, |d| d.unstored_blocks),
            disk_unstored_bytes: disk.as_ref().map_or(0, |d| d.unstored_bytes),
            health: self.requests.as_ref().map(|c| c.health()).unwrap_or_default(),
        }
    }

    fn reset(&self) {
        if let Some((_, reset)) = &self.cache {
            reset();
        }
        if let Some(counters) = &self.requests {
            counters.reset();
        }
    }
}

/// The "store requests" section: every request by purpose and by method,
/// bytes, and their cost at list prices.
pub fn render_requests(c: &RequestCounts) -> String {
    MountStats::new(&CacheStats::default(), c, PUT_PRICE_PER_1000, GET_PRICE_PER_1000).render_requests()
}

/// Writes the stats files of `source`: its text to `path`, its JSON to
/// `path` with `.json` appended (`stats` and `stats.json`, as a mount shows
/// them, so `s3block stats DIR` reads them). Each file is written beside
/// its final name and renamed over it, so a reader never sees half of one.
pub fn write_stats_files(source: &dyn StatsSource, path: &Path) -> std::io::Result<()> {
    let mut json_path = path.as_os_str().to_owned();
    json_path.push(".json");
    for (target, text) in [(path, source.render()), (Path::new(&json_path), source.render_json())] {
        let mut temporary = target.as_os_str().to_owned();
        temporary.push(".tmp");
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use s3block_core::RequestClass;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn renders_text_and_json_from_one_snapshot_and_resets() {
        let counters = Arc::new(RequestCounters::default());
        counters.count(RequestClass::BlockPut, 2000);
        counters.count(RequestClass::BlockGet, 1000);
        let hits = Arc::new(AtomicU64::new(7));
        let (h1, h2) = (hits.clone(), hits.clone());
        let stats = Stats::new()
            .with_cache(
                move || CacheStats { hits: h1.load(Ordering::Relaxed), ..Default::default() },
                move || h2.store(0, Ordering::Relaxed),
            )
            .with_requests(counters.clone());
        let text = stats.render();
        assert!(text.starts_with("[cache]\n"), "{text}");
        assert!(text.contains("  hits          7 "), "{text}");
        assert!(text.contains("PUT             2,000\n"), "{text}");
        // 2000 PUTs at $0.005/1000 + 1000 GETs at $0.0004/1000.
        assert!(text.contains("$0.0104"), "{text}");
        let json: MountStats = serde_json::from_str(&stats.render_json()).unwrap();
        assert_eq!(
            (json.reads.hits, json.requests.block_uploads, json.requests.block_fetches),
            (7, 2000, 1000)
        );
        stats.reset();
        assert_eq!(hits.load(Ordering::Relaxed), 0);
        assert_eq!(counters.snapshot(), RequestCounts::default());
        assert!(stats.render().contains("$0.0000"));
    }

    #[test]
    fn the_files_are_written_whole_text_and_json() {
        let counters = Arc::new(RequestCounters::default());
        counters.count(RequestClass::BlockPut, 10);
        let stats = Stats::new().with_requests(counters);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats");
        write_stats_files(&stats, &path).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("PUT"));
        let json: MountStats =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("stats.json")).unwrap()).unwrap();
        assert_eq!(json.requests.block_uploads, 10);
        let mut names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["stats", "stats.json"], "no temporary file is left");
        let err = write_stats_files(&stats, &dir.path().join("missing/stats")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
