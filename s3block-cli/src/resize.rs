//! `s3block resize`: changes the size of a volume that is not mounted.
//!
//! `--size` takes the new size (`40G`), or a change of it (`+10G`, `-2G`)
//! counted from the size s3block reads (the descriptor's). The volume's
//! mount lock is held for the whole resize, so a mounted volume (by s3block
//! or by s3backer, whose lock is the same object) is refused, naming the
//! holder. Growing rewrites block 0's `s3backer-filesize` metadata and then
//! the descriptor, so s3backer auto-detects the new size too. Shrinking is
//! refused while a block past the new end holds data (naming how many and
//! the first); `--discard-tail` deletes them first, in bulk, after a
//! confirmation that `--force` skips. The write order, and why a crash
//! between two writes leaves a volume that mounts at the old or the new
//! size, is in the store crate's `resize` module.
//!
//! A resize that stopped half way is finished by running it again; a
//! resize to the size s3block shows takes it back (block 0 is rewritten
//! to agree).

use std::io::Write;

use serde::Serialize;

use s3block_core::{Error, Result, format_size};
use s3block_store::{Volume, apply_resize, plan_resize, tail_refusal};

use crate::exit::{CliError, CliResult, OK};
use crate::format::{self, write_json};
use crate::target::Target;

/// What `--size` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeChange {
    /// This size.
    To(u64),
    /// Larger by this much (`+10G`).
    Grow(u64),
    /// Smaller by this much (`-10G`).
    Shrink(u64),
}

impl SizeChange {
    /// The new size of a volume of `current` bytes.
    pub fn target(self, current: u64) -> Result<u64> {
        let bad = |why: String| Error::Config(format!("--size: {why}"));
        match self {
            SizeChange::To(n) => Ok(n),
            SizeChange::Grow(n) => current
                .checked_add(n)
                .ok_or_else(|| bad(format!("{} + {} does not fit in 64 bits", current, n))),
            SizeChange::Shrink(n) if n >= current => {
                Err(bad(format!("shrinking {} by {} leaves nothing", format_size(current), format_size(n))))
            }
            SizeChange::Shrink(n) => Ok(current - n),
        }
    }
}

/// Parses `--size`: `SIZE`, `+SIZE` or `-SIZE` (binary units, as `30G`).
pub fn parse_size_change(text: &str) -> std::result::Result<SizeChange, String> {
    let t = text.trim();
    if t.starts_with("--") {
        return Err(format!("expected a size (like 40G, +10G or -2G), found the option {text}"));
    }
    let parse = |s: &str| s3block_core::parse_size(s).map_err(|e| e.to_string());
    let change = if let Some(rest) = t.strip_prefix('+') {
        SizeChange::Grow(parse(rest)?)
    } else if let Some(rest) = t.strip_prefix('-') {
        SizeChange::Shrink(parse(rest)?)
    } else {
        SizeChange::To(parse(t)?)
    };
    match change {
        SizeChange::To(0) => Err("the size must not be zero".into()),
        SizeChange::Grow(0) | SizeChange::Shrink(0) => Err(format!("{text:?} changes nothing")),
        c => Ok(c),
    }
}

/// What `resize` is asked to do.
#[derive(Debug, Clone)]
pub struct ResizeOptions {
    /// The new size, or the change.
    pub size: SizeChange,
    /// The block size, when given: it must be the volume's.
    pub block_size: Option<u64>,
    /// Delete the blocks past the new end of a shrink.
    pub discard_tail: bool,
    /// Do not ask before deleting them.
    pub force: bool,
    /// JSON output.
    pub json: bool,
}

/// What `resize` did, as `--json` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ResizeOutcome {
    /// The volume.
    pub url: String,
    /// Size before, bytes.
    pub old_size: u64,
    /// Size now, bytes.
    pub new_size: u64,
    /// Block size, bytes.
    pub block_size: u64,
    /// Block objects past the new end deleted.
    pub discarded_blocks: u64,
    /// Whether block 0 is stored (and now records the new size).
    pub block0_stored: bool,
    /// The size block 0 recorded before when it disagreed with the old
    /// size (an earlier resize stopped between its writes).
    pub block0_was: Option<u64>,
    /// Whether the volume has a descriptor (now holding the new size).
    pub descriptor: bool,
}

/// The question asked before deleting `blocks` blocks past the new end.
pub fn discard_question(blocks: u64, first: u64, url: &str) -> String {
    format!(
        "Delete the {} stored block{} past the new end of {url} (the first is block {first})? This cannot be undone.",
        format::count(blocks),
        if blocks == 1 { "" } else { "s" }
    )
}

/// `s3block resize`: holds the mount lock (refusing a mounted volume),
/// works out the new geometry, refuses or (with `--discard-tail`, after
/// `confirm` unless `--force`) deletes a shrink's tail, and rewrites
/// block 0 and the descriptor.
pub async fn resize(
    target: &Target,
    opts: &ResizeOptions,
    confirm: &mut dyn FnMut(u64, u64) -> bool,
    out: &mut dyn Write,
) -> CliResult {
    let volume =
        Volume::builder(target.opened()).name(&target.url).inspect_only().defer_mount_record().open().await?;
    let done = resize_locked(target, &volume, opts, confirm).await;
    let closed = volume.close().await;
    let outcome = done?;
    closed?;
    if opts.json {
        write_json(out, &outcome)?;
    } else {
        render(&outcome, out)?;
    }
    Ok(OK)
}

async fn resize_locked(
    target: &Target,
    volume: &Volume,
    opts: &ResizeOptions,
    confirm: &mut dyn FnMut(u64, u64) -> bool,
) -> std::result::Result<ResizeOutcome, CliError> {
    let info = volume.info();
    let current = info.geometry;
    let block_size = u64::from(current.block_size());
    if let Some(asked) = opts.block_size
        && asked != block_size
    {
        return Err(Error::Config(format!(
            "{} has {} blocks; a resize keeps them ({} asked): `s3block copy --block-size {}` makes a copy with other blocks",
            target.url,
            format_size(block_size),
            format_size(asked),
            format_size(asked)
        ))
        .into());
    }
    let new_size = opts.size.target(current.size())?;
    let store = target.store.as_ref();
    let plan = plan_resize(store, info, new_size, target.plan).await?;
    if let Some(refusal) = tail_refusal(info, &plan)
        && !opts.discard_tail
    {
        return Err(refusal.into());
    }
    if let Some(first) = plan.tail.first()
        && !opts.force
        && !confirm(plan.tail.len() as u64, u64::from(first.block.0))
    {
        return Err(CliError::Cancelled("nothing was deleted or resized".into()));
    }
    let report = apply_resize(store, &target.prefix, info, &plan, opts.discard_tail).await?;
    Ok(ResizeOutcome {
        url: target.url.clone(),
        old_size: report.old_size,
        new_size: report.new_size,
        block_size: report.block_size,
        discarded_blocks: report.discarded,
        block0_stored: report.block0_stored,
        block0_was: report.block0_disagreed,
        descriptor: report.descriptor,
    })
}

fn render(o: &ResizeOutcome, out: &mut dyn Write) -> std::io::Result<()> {
    let show = |v: u64| format!("{} ({} blocks)", format_size(v), format::count(v / o.block_size));
    if o.old_size == o.new_size {
        writeln!(out, "{} is {} already; its size is recorded again.", o.url, show(o.new_size))?;
    } else {
        writeln!(out, "Resized {} from {} to {}.", o.url, show(o.old_size), show(o.new_size))?;
    }
    if o.discarded_blocks > 0 {
        writeln!(out, "Deleted {} block objects past the new end.", format::count(o.discarded_blocks))?;
    }
    if let Some(was) = o.block0_was {
        writeln!(
            out,
            "Block 0 recorded {} (an earlier resize stopped between its writes); it now records {}.",
            format_size(was),
            format_size(o.new_size)
        )?;
    }
    if !o.block0_stored {
        writeln!(
            out,
            "Block 0 is not stored (it reads as zeros), so s3backer finds no size in this volume: give it --size={}.",
            o.new_size
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_absolute_and_relative() {
        assert_eq!(parse_size_change("40G"), Ok(SizeChange::To(40 << 30)));
        assert_eq!(parse_size_change("+10G"), Ok(SizeChange::Grow(10 << 30)));
        assert_eq!(parse_size_change("-2M"), Ok(SizeChange::Shrink(2 << 20)));
        assert!(parse_size_change("--force").unwrap_err().contains("option"));
        assert!(parse_size_change("+0").unwrap_err().contains("changes nothing"));
        assert!(parse_size_change("0").is_err());
        assert_eq!(SizeChange::Grow(1 << 20).target(1 << 20).unwrap(), 2 << 20);
        assert_eq!(SizeChange::Shrink(1 << 20).target(3 << 20).unwrap(), 2 << 20);
        assert!(
            SizeChange::Shrink(1 << 20).target(1 << 20).unwrap_err().to_string().contains("leaves nothing")
        );
    }
}
