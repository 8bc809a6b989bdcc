//! The stats file: what the mount has cost so far, as text.
//!
//! The text comes from a [`StatsSource`], so the mount program can combine
//! whatever layers it has (cache counters, store request counters) without
//! this crate knowing their types. Unlinking the stats file calls
//! [`StatsSource::reset`].

use std::fmt::Write as _;
use std::sync::Arc;

use s3block_core::{RequestCounters, RequestCounts, format_size};

pub use s3block_store::{GET_PRICE_PER_1000, PUT_PRICE_PER_1000};

/// Produces the stats file's text and resets the counters behind it.
pub trait StatsSource: Send + Sync {
    /// The current text of the stats file.
    fn render(&self) -> String;
    /// Sets the counters back to zero (the stats file was unlinked).
    fn reset(&self);
}

/// Stats made of named sections, each a closure producing lines, plus the
/// store's request counters with their cost.
///
/// The real stack adds a "cache" section from the cache's own statistics.
#[derive(Default)]
pub struct Stats {
    sections: Vec<Section>,
    requests: Option<Arc<RequestCounters>>,
}

type Render = Box<dyn Fn() -> String + Send + Sync>;
type Reset = Box<dyn Fn() + Send + Sync>;

struct Section {
    title: String,
    render: Render,
    reset: Reset,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("sections", &self.sections.len())
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

    /// Adds a section: `render` gives its lines, `reset` zeroes what it shows.
    pub fn with_section(
        mut self,
        title: impl Into<String>,
        render: impl Fn() -> String + Send + Sync + 'static,
        reset: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        self.sections.push(Section { title: title.into(), render: Box::new(render), reset: Box::new(reset) });
        self
    }
}

impl StatsSource for Stats {
    fn render(&self) -> String {
        let mut out = String::new();
        for section in &self.sections {
            let _ = writeln!(out, "[{}]", section.title);
            out.push_str(&(section.render)());
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        if let Some(counters) = &self.requests {
            out.push_str(&render_requests(&counters.snapshot()));
        }
        out
    }

    fn reset(&self) {
        for section in &self.sections {
            (section.reset)();
        }
        if let Some(counters) = &self.requests {
            counters.reset();
        }
    }
}

/// The "store requests" section: counts, bytes, and their cost at list prices.
pub fn render_requests(c: &RequestCounts) -> String {
    let mut out = String::from("[store requests]\n");
    let rows: [(&str, u64); 7] = [
        ("GET", c.gets),
        ("PUT", c.puts),
        ("DELETE", c.deletes),
        ("bulk DELETE", c.bulk_deletes),
        ("LIST", c.lists),
        ("retries", c.retries),
        ("errors", c.errors),
    ];
    for (name, n) in rows {
        let _ = writeln!(out, "{name:<16}{n}");
    }
    let _ = writeln!(out, "{:<16}{}", "bytes sent", format_size(c.bytes_sent));
    let _ = writeln!(out, "{:<16}{}", "bytes received", format_size(c.bytes_received));
    let _ = writeln!(
        out,
        "{:<16}${:.4} (PUT/LIST ${PUT_PRICE_PER_1000}/1000, GET ${GET_PRICE_PER_1000}/1000)",
        "request cost",
        c.cost(PUT_PRICE_PER_1000, GET_PRICE_PER_1000)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn renders_sections_and_cost_and_resets() {
        let counters = Arc::new(RequestCounters::default());
        counters.add_puts(2000);
        counters.add_gets(1000);
        let hits = Arc::new(AtomicU64::new(7));
        let (h1, h2) = (hits.clone(), hits.clone());
        let stats = Stats::new()
            .with_section(
                "cache",
                move || format!("hits {}", h1.load(Ordering::Relaxed)),
                move || h2.store(0, Ordering::Relaxed),
            )
            .with_requests(counters.clone());
        let text = stats.render();
        assert!(text.contains("[cache]\nhits 7\n"), "{text}");
        assert!(text.contains("PUT             2000"), "{text}");
        // 2000 PUTs at $0.005/1000 + 1000 GETs at $0.0004/1000.
        assert!(text.contains("$0.0104"), "{text}");
        stats.reset();
        assert_eq!(hits.load(Ordering::Relaxed), 0);
        assert_eq!(counters.snapshot(), RequestCounts::default());
        assert!(stats.render().contains("$0.0000"));
    }
}
