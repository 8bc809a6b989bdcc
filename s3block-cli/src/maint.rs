//! `s3block verify` and `s3block erase`: read every stored block back, or
//! delete every object of a volume, in parallel with a progress bar.

use std::fmt;
use std::io::Write;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use serde::Serialize;

use s3block_core::{BlockDevice, Error};
use s3block_store::Erase;

use crate::args::LayoutArgs;
use crate::exit::{CliError, CliResult, OK, PROBLEMS};
use crate::format::{self, Align, Table, write_json};
use crate::target::Target;
use crate::volume::{builder, no_volume, open, stored_blocks};

/// A progress bar on stderr over `len` items counted in `unit` (`blocks`,
/// `chunks`), hidden when `quiet` (and by indicatif when stderr is not a
/// terminal). Its rate is whole items per second with the unit
/// (`1,273 blocks/s`).
pub fn progress(len: u64, what: &str, unit: &'static str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(PROGRESS_TEMPLATE)
        .map(|s| {
            s.progress_chars("=> ").with_key("rate", move |state: &ProgressState, w: &mut dyn fmt::Write| {
                let _ = w.write_str(&rate(state.per_sec(), unit));
            })
        })
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// The progress bar's layout: `{rate}` is [`rate`]'s, not indicatif's
/// unitless `{per_sec}`.
pub const PROGRESS_TEMPLATE: &str = "{msg} [{bar:30}] {pos}/{len} {rate} eta {eta}";

/// A rate for people: whole `unit`s per second with separators.
pub fn rate(per_sec: f64, unit: &str) -> String {
    let whole = if per_sec.is_finite() && per_sec > 0.0 { per_sec.round() as u64 } else { 0 };
    format!("{} {unit}/s", format::count(whole))
}

/// The question `erase` asks before deleting `blocks` blocks of `url`.
pub fn erase_question(blocks: u64, url: &str) -> String {
    format!("Erase all {} blocks of {url}? This cannot be undone.", format::count(blocks))
}

/// A block that failed verification.
#[derive(Debug, Clone, Serialize)]
pub struct BadBlock {
    /// Block number.
    pub block: u32,
    /// Object key.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Blocks read.
    pub checked: u64,
    /// Blocks that failed, by number.
    pub bad: Vec<BadBlock>,
}

/// Reads and decodes every stored block of the volume, `parallel` at a time.
pub async fn verify_blocks(
    target: &Target,
    layout: &LayoutArgs,
    parallel: usize,
    quiet: bool,
) -> Result<VerifyReport, CliError> {
    let v = open(target, layout).await?;
    let stored = stored_blocks(&v).await?;
    let bar = progress(stored.len() as u64, "verifying", "blocks", quiet);
    let device = &v.device;
    let mut results = futures::stream::iter(stored.iter().map(|s| async move {
        let r = device.read_block(s.block).await;
        (s.block, r)
    }))
    .buffer_unordered(parallel.max(1));
    let mut bad = Vec::new();
    while let Some((block, r)) = results.next().await {
        bar.inc(1);
        match r {
            Ok(_) => {}
            Err(Error::Corrupt { key, reason, .. }) => bad.push(BadBlock { block: block.0, key, reason }),
            Err(e) if e.store_kind().is_some() && !e.is_transient() && e.block().is_some() => {
                bad.push(BadBlock { block: block.0, key: v.volume.layout.key(block), reason: e.to_string() })
            }
            Err(e) => return Err(e.into()),
        }
    }
    bar.finish_and_clear();
    bad.sort_by_key(|b| b.block);
    Ok(VerifyReport { checked: stored.len() as u64, bad })
}

/// `s3block verify`: exits with [`PROBLEMS`] when a block is bad.
pub async fn verify(
    target: &Target,
    layout: &LayoutArgs,
    parallel: usize,
    quiet: bool,
    json: bool,
    out: &mut dyn Write,
) -> CliResult {
    let report = verify_blocks(target, layout, parallel, quiet).await?;
    if json {
        write_json(out, &report)?;
    } else if report.bad.is_empty() {
        writeln!(out, "{} blocks checked, all good.", format::count(report.checked))?;
    } else {
        let mut t = Table::new(&[("block", Align::Right), ("key", Align::Left), ("problem", Align::Left)]);
        for b in &report.bad {
            t.row(vec![b.block.to_string(), b.key.clone(), b.reason.clone()]);
        }
        write!(out, "{}", t.render())?;
        writeln!(
            out,
            "{} of {} blocks are bad.",
            format::count(report.bad.len() as u64),
            format::count(report.checked)
        )?;
    }
    Ok(if report.bad.is_empty() { OK } else { PROBLEMS })
}

/// `s3block erase`: deletes every block, then the descriptor, then the lock.
/// Refuses while the volume is locked unless `force`; `confirm` is asked
/// (with the number of blocks) unless `force`.
pub async fn erase(
    target: &Target,
    layout: &LayoutArgs,
    force: bool,
    quiet: bool,
    confirm: &mut dyn FnMut(u64) -> bool,
    out: &mut dyn Write,
) -> CliResult {
    let plan =
        Erase::plan(builder(target, layout)?, force).await.map_err(|e| no_volume(target, layout, e))?;
    let n = plan.blocks();
    if !force && !confirm(n) {
        return Err(CliError::Cancelled("nothing was deleted".into()));
    }
    let bar = progress(n, "erasing", "blocks", quiet);
    plan.run(&mut |deleted| bar.inc(deleted)).await?;
    bar.finish_and_clear();
    writeln!(out, "Erased {} blocks, the descriptor and the lock of {}.", format::count(n), target.url)?;
    Ok(OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_have_a_unit_and_counts_separators() {
        assert_eq!(rate(1272.8829, "blocks"), "1,273 blocks/s");
        assert_eq!(rate(0.2, "chunks"), "0 chunks/s");
        assert_eq!(rate(f64::INFINITY, "blocks"), "0 blocks/s");
        assert!(PROGRESS_TEMPLATE.contains("{rate}") && !PROGRESS_TEMPLATE.contains("per_sec"));
        assert!(erase_question(8321, "file:///v").contains("Erase all 8,321 blocks of file:///v?"));
    }
}
