//! The `stats` and `stats.json` files of a mount of several volumes: each
//! volume's figures (what its own `NAME.stats` shows) and the total.
//!
//! The total adds up, over the volumes, every count and byte figure of the
//! sections `cache`, `write_back`, `requests` and `cost` of the volumes'
//! `stats.json` (ratios and latencies are per volume only), and says the
//! budget they share: the cache size and dirty limit of the whole mount,
//! and the upload slots.

use std::sync::Arc;

use s3block_cache::CacheBudget;
use s3block_cache::frontend::StatsSource;
use s3block_core::format_size;

use crate::multi::Served;

/// The sections of a volume's `stats.json` the total adds up.
const SUMMED: [&str; 4] = ["cache", "write_back", "requests", "cost"];

/// Renders the mount's total stats.
#[derive(Debug, Clone)]
pub struct Totals {
    budget: Arc<CacheBudget>,
}

impl Totals {
    /// Totals of the volumes sharing `budget`.
    pub fn new(budget: Arc<CacheBudget>) -> Self {
        Totals { budget }
    }

    fn summed(&self, served: &[Arc<Served>]) -> (serde_json::Value, Vec<(String, serde_json::Value)>) {
        let mut total = serde_json::Map::new();
        let mut each = Vec::new();
        for v in served {
            let json: serde_json::Value =
                serde_json::from_str(&v.stats.render_json()).unwrap_or(serde_json::Value::Null);
            for section in SUMMED {
                if let Some(part) = json.get(section) {
                    let into = total.entry(section).or_insert_with(|| serde_json::json!({}));
                    add(into, part);
                }
            }
            each.push((v.name.clone(), json));
        }
        (serde_json::Value::Object(total), each)
    }

    /// The text of `stats`: the budget, the total, then each volume's text.
    pub fn render(&self, served: &[Arc<Served>]) -> String {
        let (total, _) = self.summed(served);
        let figure = |section: &str, key: &str| {
            total.get(section).and_then(|s| s.get(key)).and_then(|v| v.as_u64()).unwrap_or(0)
        };
        let mut out = format!(
            "[total] {} volume(s)\n\
             budget          {} cache, {} dirty, {} upload slots (shared)\n\
             resident        {} in {} blocks\n\
             dirty           {} in {} blocks\n\
             uploads         {} in flight\n",
            served.len(),
            format_size(self.budget.cache_size()),
            format_size(self.budget.max_dirty()),
            self.budget.upload_slots(),
            format_size(figure("cache", "resident_bytes")),
            figure("cache", "resident_blocks"),
            format_size(figure("cache", "dirty_bytes")),
            figure("cache", "dirty_blocks"),
            figure("cache", "uploads_in_flight"),
        );
        for v in served {
            out.push_str(&format!("\n[volume {}]\n{}", v.name, v.stats.render()));
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    /// The JSON of `stats.json`: `{"budget": ..., "total": ..., "volumes": {NAME: ...}}`.
    pub fn render_json(&self, served: &[Arc<Served>]) -> String {
        let (total, each) = self.summed(served);
        let volumes: serde_json::Map<String, serde_json::Value> = each.into_iter().collect();
        let doc = serde_json::json!({
            "budget": {
                "cache_bytes": self.budget.cache_size(),
                "dirty_bytes": self.budget.max_dirty(),
                "upload_slots": self.budget.upload_slots(),
            },
            "total": total,
            "volumes": volumes,
        });
        format!("{doc:#}\n")
    }
}

/// The mount's total as a stats source (for `--stats-file` and the
/// service's status line).
pub struct TotalSource {
    /// The filesystem whose volumes are counted.
    pub fs: std::sync::Weak<crate::multi::MultiFs>,
    /// The renderer.
    pub totals: Totals,
}

impl TotalSource {
    fn served(&self) -> Vec<Arc<Served>> {
        self.fs.upgrade().map(|fs| fs.served()).unwrap_or_default()
    }
}

impl StatsSource for TotalSource {
    fn render(&self) -> String {
        self.totals.render(&self.served())
    }
    fn render_json(&self) -> String {
        self.totals.render_json(&self.served())
    }
    fn reset(&self) {
        for v in self.served() {
            v.stats.reset();
        }
    }
}

/// Adds every number of `part` into `into`, key by key (objects within
/// objects too); the keys naming ratios are left out.
fn add(into: &mut serde_json::Value, part: &serde_json::Value) {
    let (Some(into), Some(part)) = (into.as_object_mut(), part.as_object()) else { return };
    for (key, value) in part {
        if key.contains("ratio") {
            continue;
        }
        match value {
            serde_json::Value::Number(n) => {
                let entry = into.entry(key.clone()).or_insert(serde_json::json!(0));
                let sum = match (entry.as_u64(), n.as_u64()) {
                    (Some(a), Some(b)) => serde_json::json!(a.saturating_add(b)),
                    _ => serde_json::json!(entry.as_f64().unwrap_or(0.0) + n.as_f64().unwrap_or(0.0)),
                };
                *entry = sum;
            }
            serde_json::Value::Object(_) => {
                let entry = into.entry(key.clone()).or_insert_with(|| serde_json::json!({}));
                add(entry, value);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_add_up_and_ratios_are_left_out() {
        let mut total = serde_json::json!({});
        for part in [
            serde_json::json!({"hits": 2, "hit_ratio": 0.5, "dollars": 0.25, "in": {"n": 1}, "name": "x"}),
            serde_json::json!({"hits": 3, "hit_ratio": 0.1, "dollars": 0.5, "in": {"n": 4}}),
        ] {
            add(&mut total, &part);
        }
        assert_eq!(total, serde_json::json!({"hits": 5, "dollars": 0.75, "in": {"n": 5}}));
    }
}
