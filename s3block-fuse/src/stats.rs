//! The stats files: what the mount has done and cost so far, for people
//! (`stats`) and for scripts (`stats.json`).
//!
//! Both come from one [`MountStats`] (in the cache crate, so `s3block
//! stats` reads the same struct back): [`Stats`] fills it from the cache's
//! statistics and the store's request counters, renders the text file from
//! it and serialises it to JSON. Unlinking either file calls
//! [`StatsSource::reset`]. The JSON schema is in `docs/STATS.md`.

use std::sync::Arc;

use s3block_cache::{CacheStats, MountStats};
use s3block_core::{RequestCounters, RequestCounts};

pub use s3block_store::{GET_PRICE_PER_1000, PUT_PRICE_PER_1000};

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
}

type Snapshot = Box<dyn Fn() -> CacheStats + Send + Sync>;
type Reset = Box<dyn Fn() + Send + Sync>;

/// The mount's statistics: the cache's figures and the store's request
/// counters with their cost at list prices.
#[derive(Default)]
pub struct Stats {
    cache: Option<(Snapshot, Reset)>,
    requests: Option<Arc<RequestCounters>>,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("cache", &self.cache.is_some())
            .field("requests", &self.requests)
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

    /// The statistics now.
    pub fn snapshot(&self) -> MountStats {
        let cache = self.cache.as_ref().map(|(snapshot, _)| snapshot()).unwrap_or_default();
        let requests = self.requests.as_ref().map(|c| c.snapshot()).unwrap_or_default();
        MountStats::new(&cache, &requests, PUT_PRICE_PER_1000, GET_PRICE_PER_1000)
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

#[cfg(test)]
mod tests {
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
                move || {
                    let mut stats = CacheStats::default();
                    stats.hits = h1.load(Ordering::Relaxed);
                    stats
                },
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
}
