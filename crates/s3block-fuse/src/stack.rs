//! Building the device stack a mount runs on, from the options.
//!
//! THE ONE PLACE THAT KNOWS THE LAYERS. Today only `memory://` is served
//! (a `MemoryDevice`, for tests and trials); `s3://` and `file://` give a
//! clear error until the store and cache layers are wired in here:
//! open the store from the URL and options, take the mount lock, check or
//! create the volume geometry, wrap it in the cache, and return the
//! cache as `device`, its statistics as `stats`, and the lock release as
//! `release`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use s3block_core::{BlockDevice, Error, Geometry, MemoryDevice, Result, format_size};

use crate::options::{DEFAULT_BLOCK_SIZE, Options};
use crate::stats::{Stats, StatsSource};

/// The hook run last at a clean exit: releases the mount lock.
pub type ReleaseHook = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send>;

/// What a mount serves: the device, its statistics, and the exit hook.
pub struct Stack {
    /// The top of the stack (the cache, over the store).
    pub device: Arc<dyn BlockDevice>,
    /// Text for the stats file.
    pub stats: Arc<dyn StatsSource>,
    /// Releases the mount lock; called once every block is stored.
    pub release: ReleaseHook,
    /// One line naming the volume, for the log.
    pub description: String,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack").field("device", &self.device).field("description", &self.description).finish()
    }
}

/// Builds the stack for `opts.store`. Errors name the option or URL at fault.
pub async fn build_stack(opts: &Options) -> Result<Stack> {
    let url = opts.store.as_str();
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("memory") => memory_stack(opts),
        Some("s3") | Some("file") => Err(Error::Config(format!(
            "store {url}: {}:// volumes are not supported by this build yet; use memory:// for now",
            scheme.unwrap_or_default()
        ))),
        _ => Err(Error::Config(format!(
            "store {url:?}: expected s3://bucket[/prefix], file:///dir or memory://"
        ))),
    }
}

fn memory_stack(opts: &Options) -> Result<Stack> {
    let size = opts.size.ok_or_else(|| {
        Error::Config(
            "--size is required for a memory:// volume (it has no stored geometry), e.g. --size=1G".into(),
        )
    })?;
    let block_size = opts.block_size.unwrap_or(u64::from(DEFAULT_BLOCK_SIZE));
    let geometry =
        Geometry::new(size, block_size).map_err(|e| Error::Config(format!("--size/--block-size: {e}")))?;
    let device = Arc::new(MemoryDevice::new(geometry));
    let shown = device.clone();
    let stats = Stats::new().with_section(
        "memory device",
        move || {
            let c = shown.counts();
            format!(
                "stored blocks   {}\nblock reads     {}\nblock writes    {}\ndiscards        {}\nflushes         {}\n",
                shown.stored_blocks(),
                c.reads,
                c.writes,
                c.discards,
                c.flushes
            )
        },
        || {},
    );
    Ok(Stack {
        description: format!(
            "memory volume of {} in {} blocks (contents are lost at exit)",
            format_size(geometry.size()),
            format_size(geometry.block_size().into())
        ),
        device,
        stats: Arc::new(stats),
        release: Box::new(|| Box::pin(async { Ok(()) })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Options {
        let mut full = vec!["s3block-fuse"];
        full.extend_from_slice(args);
        Options::parse_from_args(full).unwrap()
    }

    #[tokio::test]
    async fn memory_volume_uses_size_and_default_block_size() {
        let stack = build_stack(&opts(&["--size=64M", "memory://", "/m"])).await.unwrap();
        let g = stack.device.geometry();
        assert_eq!((g.size(), g.block_size()), (64 << 20, DEFAULT_BLOCK_SIZE));
        assert!(stack.stats.render().contains("stored blocks   0"));
        (stack.release)().await.unwrap();
    }

    #[tokio::test]
    async fn errors_name_what_is_wrong() {
        let err = build_stack(&opts(&["memory://", "/m"])).await.unwrap_err().to_string();
        assert!(err.contains("--size"), "{err}");
        let err = build_stack(&opts(&["--size=1000", "memory://", "/m"])).await.unwrap_err().to_string();
        assert!(err.contains("--size") && err.contains("multiple"), "{err}");
        let err = build_stack(&opts(&["s3://bucket/p", "/m"])).await.unwrap_err().to_string();
        assert!(err.contains("s3://bucket/p"), "{err}");
        let err = build_stack(&opts(&["ftp://x", "/m"])).await.unwrap_err().to_string();
        assert!(err.contains("ftp://x") && err.contains("s3://"), "{err}");
    }
}
