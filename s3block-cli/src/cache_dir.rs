//! `s3block cache inspect DIR` and `s3block cache discard DIR`: a disk
//! cache directory (a mount's `--cache-dir`), read or removed without the
//! store and without mounting.
//!
//! Inspect says which volume the directory belongs to, whether it was
//! closed cleanly, how many blocks it holds, which blocks it holds that
//! are not yet in the bucket (they are uploaded at the next mount of that
//! volume), and what damage its checksums found. Discard deletes its files;
//! while blocks not yet in the bucket are there it asks for `--force`,
//! because their data exists nowhere else. Both refuse a directory a
//! running mount holds.

use std::io::Write;
use std::path::Path;

use s3block_core::{Error, format_count, format_size};

use crate::args::CacheCommand;
use crate::exit::{CliResult, OK, PROBLEMS};
use crate::format::write_json;

/// Runs a `cache` subcommand.
pub fn run(command: CacheCommand, out: &mut dyn Write) -> CliResult {
    match command {
        CacheCommand::Inspect(a) => inspect(&a.dir, a.output.json, out),
        CacheCommand::Discard(a) => discard(&a.dir, a.force, a.output.json, out),
    }
}

/// `s3block cache inspect`: exit 0, or 1 when damaged entries were found.
pub fn inspect(dir: &Path, json: bool, out: &mut dyn Write) -> CliResult {
    let report = s3block_cache::inspect(dir)?;
    if json {
        write_json(out, &report)?;
    } else {
        writeln!(out, "cache directory  {}", report.dir.display())?;
        writeln!(out, "volume           {}", report.volume)?;
        writeln!(
            out,
            "geometry         {} blocks of {} ({})",
            format_count(report.block_count),
            format_size(report.block_size.into()),
            format_size(report.block_count * u64::from(report.block_size))
        )?;
        writeln!(
            out,
            "state            {}",
            if report.clean { "closed cleanly" } else { "not closed cleanly (a crash, or in use)" }
        )?;
        writeln!(out, "last mount       {}", report.marker.as_deref().unwrap_or("(none recorded)"))?;
        if let Some(pending) = &report.pending_marker {
            writeln!(out, "pending mount    {pending}")?;
        }
        writeln!(
            out,
            "blocks           {} in {} segment files, {} bytes",
            format_count(report.blocks),
            format_count(report.segments),
            format_count(report.bytes)
        )?;
        writeln!(
            out,
            "not in bucket    {} blocks{}",
            format_count(report.dirty_blocks.len() as u64),
            if report.dirty_blocks.is_empty() {
                String::new()
            } else {
                format!(": {}", block_list(&report.dirty_blocks))
            }
        )?;
        writeln!(out, "damaged entries  {}", format_count(report.corrupt.len() as u64))?;
        for c in &report.corrupt {
            let block = c.block.map(|b| format!(" (block {b})")).unwrap_or_default();
            writeln!(out, "  {} at byte {}{block}: {}", c.file.display(), c.offset, c.reason)?;
        }
    }
    Ok(if report.corrupt.is_empty() { OK } else { PROBLEMS })
}

/// `s3block cache discard`.
pub fn discard(dir: &Path, force: bool, json: bool, out: &mut dyn Write) -> CliResult {
    // A directory that is not a cache directory is refused by inspect,
    // before anything is deleted.
    let report = s3block_cache::inspect(dir)?;
    if !report.dirty_blocks.is_empty() && !force {
        return Err(Error::Config(format!(
            "{}: {} blocks of {} are not in the bucket yet ({}); mounting that volume with \
             --cache-dir {} uploads them. Give --force to delete them anyway",
            dir.display(),
            format_count(report.dirty_blocks.len() as u64),
            report.volume,
            block_list(&report.dirty_blocks),
            dir.display()
        ))
        .into());
    }
    let removed = s3block_cache::discard(dir)?;
    if json {
        write_json(out, &removed)?;
    } else {
        writeln!(
            out,
            "Discarded {}: {} files, {} bytes{}.",
            dir.display(),
            format_count(removed.files),
            format_count(removed.bytes),
            if report.dirty_blocks.is_empty() {
                String::new()
            } else {
                format!(
                    ", with {} blocks that were not in the bucket",
                    format_count(report.dirty_blocks.len() as u64)
                )
            }
        )?;
    }
    Ok(OK)
}

/// Block numbers, the first twenty then how many more.
fn block_list(blocks: &[u64]) -> String {
    let mut text = blocks.iter().take(20).map(u64::to_string).collect::<Vec<_>>().join(", ");
    if blocks.len() > 20 {
        text.push_str(&format!(" and {} more", format_count(blocks.len() as u64 - 20)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_block_lists_are_cut() {
        assert_eq!(block_list(&[1, 2, 3]), "1, 2, 3");
        let many: Vec<u64> = (0..25).collect();
        assert!(block_list(&many).ends_with("19 and 5 more"), "{}", block_list(&many));
    }
}
