//! The `s3block` command: inspect, verify, repair, copy and cost out s3block
//! volumes without mounting them.
//!
//! Users of a block device kept in a bucket need to see what is in the
//! bucket, check it, break a stale lock, erase a volume, move it to another
//! block size, and above all choose the block size before the first byte is
//! written, since every block is a billed PUT. This crate is the command
//! line for all of that; the logic of blocks and objects lives in the layers
//! below (`s3block-core`, `s3block-store`).
//!
//! - [`Cli`] is the clap command line; [`StoreArgs`] the store options the
//!   mount binary shares.
//! - [`run`] executes a parsed command line, writing to the given output,
//!   and returns the exit code; the binary only parses and calls it.
//! - Each command is also a function callable with its arguments (and, for
//!   store commands, a store handle), so tests drive them without a process.
//! - Output is a table for people by default and JSON with `--json`.
//! - Exit codes are in [`exit`] and listed at the end of `--help`.
//!
//! # Encrypted volumes
//!
//! `create --encrypt[=SCHEME]` makes an encrypted volume. Commands that
//! decode blocks (`cat`, `verify`, `copy`) need its password: from
//! `--password-file FILE`, else `S3BLOCK_PASSWORD`, else a prompt on the
//! terminal; the descriptor says the volume is encrypted, so no flag is
//! needed (a volume s3backer encrypted needs `--encrypt`). A wrong password
//! exits with code 7 and "wrong password"; a block that fails
//! authentication is a bad block in `verify`. `info`, `ls`, `stat`,
//! `unlock` and `erase` look only at objects and need no password. A copy
//! is encrypted as its source (same scheme and password, new salt) unless
//! `--dest-encrypt=SCHEME|none` and `--dest-password-file` (or
//! `S3BLOCK_DEST_PASSWORD`) say otherwise.
//!
//! # Example
//!
//! ```
//! use clap::Parser;
//! use s3block_cli::{Cli, run};
//!
//! let cli = Cli::parse_from(["s3block", "cost", "--size", "30G", "--block-size", "4K", "--put-price", "0.01"]);
//! let mut out = Vec::new();
//! assert_eq!(run(cli, &mut out, &mut std::io::sink()), 0);
//! assert!(String::from_utf8(out).unwrap().contains("7,864,320"));
//! ```

mod args;
pub mod cache_dir;
pub mod completions;
pub mod confirm;
pub mod copy;
pub mod cost;
pub mod exit;
pub mod format;
pub mod maint;
pub mod mounted_volumes;
pub mod resize;
pub mod resize_mounted;
pub mod stat;
pub mod stats;
pub mod target;
pub mod unlock;
pub mod volume;

use std::io::Write;

pub use args::{
    BlockRange, BlockSizes, CatArgs, Cli, Command, CopyArgs, CostArgs, CreateArgs, DEST_PASSWORD_ENV,
    DestArgs, DestEncryption, DstStoreArgs, EraseArgs, InfoArgs, LayoutArgs, LsArgs, OutputArgs, PricePreset,
    ResizeArgs, StatArgs, StatsArgs, StoreArgs, UnlockArgs, VerifyArgs, parse_block_number,
    parse_block_range,
};
pub use completions::{CompletionShell, CompletionsArgs, completions};
pub use exit::{CliError, CliResult};

use s3block_core::Error;

/// Runs a parsed command line, writing results to `out` and messages to
/// `err`, and returns the process exit code (see [`exit`]).
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match dispatch(cli, out) {
        Ok(code) => code,
        Err(e) if e.is_broken_pipe() => exit::OK,
        Err(e) => {
            let text = match &e {
                CliError::Core(core) => copy::copy_side_hint(s3block_store::with_hint(core, error_chain(&e))),
                _ => error_chain(&e),
            };
            let _ = writeln!(err, "s3block: {text}");
            e.exit_code()
        }
    }
}

/// The error and its causes, joined by `: `, skipping causes whose text the
/// message already shows.
fn error_chain(e: &CliError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

fn dispatch(cli: Cli, out: &mut dyn Write) -> CliResult {
    match cli.command {
        Command::Cost(args) => cost_command(&args, out),
        Command::Stats(args) => {
            // One volume of a mount of several: its NAME.stats.
            let target = args.mountpoint.to_string_lossy();
            if let Some(v) = mounted_volumes::MountedVolume::of(&target) {
                let name = format!("{}.{}", v.name, args.stats_filename);
                return stats::run(&v.dir, &name, args.output.json, out);
            }
            stats::run(&args.mountpoint, &args.stats_filename, args.output.json, out)
        }
        Command::Rescan(args) => mounted_volumes::rescan(&args.mountpoint, out),
        Command::Cache(command) => cache_dir::run(command, out),
        Command::Completions(args) => {
            completions(args.shell, &mut <Cli as clap::CommandFactory>::command(), "s3block", out)?;
            Ok(exit::OK)
        }
        command => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|source| Error::Io { path: "the async runtime".into(), source })?;
            runtime.block_on(store_command(command, out))
        }
    }
}

fn open_target(url: &str, s: &StoreArgs) -> Result<target::Target, CliError> {
    Ok(target::open(url, s)?)
}

async fn store_command(command: Command, out: &mut dyn Write) -> CliResult {
    match command {
        Command::Create(a) => {
            if let Some(v) = mounted_volumes::MountedVolume::of(&a.store) {
                let size = a.volume.layout.size.ok_or_else(|| {
                    Error::Config(format!("create {}: give --size (the volume's size)", a.store))
                })?;
                return v.create(size, a.volume.layout.block_size, out);
            }
            let t = open_target(&a.store, &a.volume.store_args)?;
            volume::create(&t, &a.volume.layout, a.adopt, a.output.json, out).await
        }
        Command::Info(a) => {
            let t = open_target(&a.store, &a.store_args)?;
            volume::info(&t, &LayoutArgs::default(), a.output.json, out).await
        }
        Command::Ls(a) => {
            let t = open_target(&a.store, &a.store_args)?;
            volume::ls(&t, &LayoutArgs::default(), a.range, a.summary, a.long, a.output.json, out).await
        }
        Command::Cat(a) => {
            let t = open_target(&a.store, &a.store_args)?;
            volume::cat(&t, &LayoutArgs::default(), a.block, a.raw, out).await
        }
        Command::Stat(a) => {
            let t = open_target(&a.store, &a.store_args)?;
            volume::stat(&t, &LayoutArgs::default(), a.block, a.output.json, out).await
        }
        Command::Verify(a) => {
            let t = open_target(&a.store, &a.store_args)?;
            maint::verify(&t, &LayoutArgs::default(), a.parallel.into(), a.quiet, a.output.json, out).await
        }
        Command::Erase(a) => {
            if let Some(v) = mounted_volumes::MountedVolume::of(&a.store) {
                let question = format!(
                    "Erase the volume {} mounted at {}? This cannot be undone.",
                    v.name,
                    v.dir.display()
                );
                if !a.force && !confirm::ask(&question, "erase")? {
                    return Err(CliError::Cancelled("nothing was deleted".into()));
                }
                return v.erase(out);
            }
            let t = open_target(&a.store, &a.store_args)?;
            let url = a.store.clone();
            let mut failed = None;
            let mut confirm = |n: u64| {
                confirm::ask(&maint::erase_question(n, &url), "erase").unwrap_or_else(|e| {
                    failed = Some(e);
                    false
                })
            };
            let done = maint::erase(&t, &LayoutArgs::default(), a.force, a.quiet, &mut confirm, out).await;
            match failed {
                Some(e) => Err(e),
                None => done,
            }
        }
        Command::Resize(a) => {
            if let Some(v) = mounted_volumes::MountedVolume::of(&a.store) {
                return v.resize(a.size, a.block_size, out);
            }
            if let Some(control) = resize_mounted::control_file(&a.store) {
                return resize_mounted::resize_mounted(
                    &control,
                    a.size,
                    a.block_size,
                    a.discard_tail,
                    a.output.json,
                    out,
                );
            }
            let t = open_target(&a.store, &a.store_args)?;
            let url = a.store.clone();
            let mut failed = None;
            let mut confirm = |n: u64, first: u64| {
                confirm::ask(&resize::discard_question(n, first, &url), "delete").unwrap_or_else(|e| {
                    failed = Some(e);
                    false
                })
            };
            let opts = resize::ResizeOptions {
                size: a.size,
                block_size: a.block_size,
                discard_tail: a.discard_tail,
                force: a.force,
                json: a.output.json,
            };
            let done = resize::resize(&t, &opts, &mut confirm, out).await;
            match failed {
                Some(e) => Err(e),
                None => done,
            }
        }
        Command::Unlock(a) => {
            let t = open_target(&a.store, &a.store_args)?;
            let force = a.force;
            let mut confirm = |_: &s3block_store::LockInfo| {
                if force {
                    Ok(true)
                } else {
                    confirm::ask("Remove the lock? Only do this if that mount is gone.", "unlock")
                }
            };
            unlock::unlock(&t, &mut confirm, a.output.json, out).await
        }
        Command::Copy(a) => {
            let src = target::open(&a.src, &a.store_args)?;
            // The copy's store options: its own --dst-*, else the source's;
            // never the source's --prefix or password options (see `copy`).
            let dst_args = a.dst_store.store_args(&a.store_args, a.dst_prefix.clone());
            let dst = copy::open_destination(&a.dst, &dst_args, a.dst_store.own_credentials())?;
            let opts = copy::CopyOptions {
                block_size: a.block_size,
                compress: a.compression,
                hash_prefix: a.hash_prefix,
                no_verify: a.no_verify,
                force: a.force,
                parallel: a.parallel.into(),
                quiet: a.quiet,
                dest_encrypt: a.dest.dest_encrypt,
                dest_password_file: a.dest.dest_password_file,
                resume: a.resume,
            };
            copy::copy(&src, &dst, &opts, a.output.json, out).await
        }
        Command::Cost(_)
        | Command::Stats(_)
        | Command::Rescan(_)
        | Command::Cache(_)
        | Command::Completions(_) => Err(Error::Config("not a store command".into()).into()),
    }
}

/// `s3block cost`: the estimate for the given arguments, as a table or JSON.
pub fn cost_command(args: &CostArgs, out: &mut dyn Write) -> CliResult {
    let (preset, source) = args.prices.prices();
    let prices = cost::Prices {
        put_per_1000: args.put_price.unwrap_or(preset.put_per_1000),
        get_per_1000: args.get_price.unwrap_or(preset.get_per_1000),
        storage_per_gb_month: args.storage_price.unwrap_or(preset.storage_per_gb_month),
    };
    let overridden = args.put_price.is_some() || args.get_price.is_some() || args.storage_price.is_some();
    let price_source =
        if overridden { format!("{source}, with prices given on the command line") } else { source.into() };
    let input = cost::CostInput {
        size: args.size,
        block_sizes: args.block_sizes.iter().flat_map(|b| b.0.iter().copied()).collect(),
        stored: args.stored.unwrap_or(args.size),
        write_per_month: args.write_per_month,
        read_per_month: args.read_per_month,
        cache_size: args.cache_size,
        memory: args.memory,
        s3backer_cache_blocks: args.s3backer_cache_blocks,
        prices,
        price_source,
    };
    let report = cost::estimate(&input)?;
    if args.output.json {
        serde_json::to_writer_pretty(&mut *out, &report).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", cost::render(&report))?;
    }
    Ok(exit::OK)
}
