//! The end of a mount: store everything, then release the lock.
//!
//! [`shutdown`] flushes the device until the flush succeeds, waiting longer
//! between attempts (the store may be down for a while: the data must not be
//! thrown away because the network is), then calls the release hook (which
//! deletes the mount lock). Only the `abandon` future, which the program
//! completes on the user's second SIGINT, ends it with data unstored; then
//! the lock is kept, so the next mount knows the volume was not closed
//! cleanly.

use std::future::Future;
use std::time::Duration;

use s3block_core::{BlockDevice, Error, Result};

/// How long to wait between failed flushes at exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure.
    pub first: Duration,
    /// Longest wait; the wait doubles up to this.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { first: Duration::from_secs(1), max: Duration::from_secs(60) }
    }
}

/// How a shutdown ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// Every block is stored. `lock_released` is false when the release
    /// hook failed (the data is safe; the lock must be broken by hand).
    Stored {
        /// Whether the release hook succeeded.
        lock_released: bool,
        /// Flush attempts made.
        attempts: u32,
    },
    /// The user abandoned the unstored data.
    Abandoned {
        /// Blocks known not to be stored, when the device said.
        lost_blocks: Option<usize>,
        /// Flush attempts made.
        attempts: u32,
    },
}

/// Flushes `device` until it succeeds, then calls `release`. Gives up only
/// when `abandon` completes. See the module docs.
pub async fn shutdown<R, RF>(
    device: &dyn BlockDevice,
    backoff: Backoff,
    abandon: impl Future<Output = ()>,
    release: R,
) -> ShutdownOutcome
where
    R: FnOnce() -> RF,
    RF: Future<Output = Result<()>>,
{
    let mut abandon = std::pin::pin!(abandon);
    let mut wait = backoff.first;
    let mut attempts = 0u32;
    let mut lost_blocks = None;
    loop {
        attempts += 1;
        let result = tokio::select! {
            r = device.flush() => r,
            () = &mut abandon => return ShutdownOutcome::Abandoned { lost_blocks, attempts },
        };
        match result {
            Ok(()) => break,
            Err(e) => {
                if let Error::WriteBack { count, .. } = &e {
                    lost_blocks = Some(*count);
                }
                tracing::error!(
                    attempt = attempts,
                    "could not store the written data before exit: {e}; retrying in {}s \
                     (the data is kept; send SIGINT twice, e.g. Ctrl-C Ctrl-C, to abandon it)",
                    wait.as_secs_f32()
                );
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut abandon => return ShutdownOutcome::Abandoned { lost_blocks, attempts },
        }
        wait = (wait * 2).min(backoff.max);
    }
    let lock_released = match release().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("every block is stored, but the mount lock could not be released: {e}");
            false
        }
    };
    ShutdownOutcome::Stored { lock_released, attempts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Range;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use s3block_core::{BlockId, Bytes, Geometry, StoreErrorKind, async_trait};

    /// A device whose flush fails a given number of times.
    #[derive(Debug)]
    struct FlakyFlush {
        failures: AtomicU32,
        flushes: AtomicU32,
    }

    #[async_trait]
    impl BlockDevice for FlakyFlush {
        fn geometry(&self) -> Geometry {
            Geometry::new(1 << 20, 4096).expect("valid geometry")
        }
        async fn read_block(&self, _: BlockId) -> Result<Bytes> {
            Ok(Bytes::from(vec![0; 4096]))
        }
        async fn write_block(&self, _: BlockId, _: Bytes) -> Result<()> {
            Ok(())
        }
        async fn discard(&self, _: Range<u64>) -> Result<()> {
            Ok(())
        }
        async fn flush(&self) -> Result<()> {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            if self.failures.load(Ordering::SeqCst) == 0 {
                return Ok(());
            }
            self.failures.fetch_sub(1, Ordering::SeqCst);
            let source = Error::Store {
                block: Some(BlockId(3)),
                key: "vol/00000003".into(),
                kind: StoreErrorKind::Transient,
                source: "connection refused".into(),
            };
            Err(Error::WriteBack { count: 5, first: BlockId(3), source: Box::new(source) })
        }
    }

    fn flaky(failures: u32) -> FlakyFlush {
        FlakyFlush { failures: AtomicU32::new(failures), flushes: AtomicU32::new(0) }
    }

    const FAST: Backoff = Backoff { first: Duration::from_millis(1), max: Duration::from_millis(4) };

    #[tokio::test]
    async fn retries_until_stored_then_releases() {
        let dev = flaky(3);
        let released = Arc::new(AtomicBool::new(false));
        let r = released.clone();
        let outcome = shutdown(&dev, FAST, std::future::pending(), || async move {
            r.store(true, Ordering::SeqCst);
            Ok(())
        })
        .await;
        assert_eq!(outcome, ShutdownOutcome::Stored { lock_released: true, attempts: 4 });
        assert_eq!(dev.flushes.load(Ordering::SeqCst), 4);
        assert!(released.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn abandon_keeps_the_lock_and_counts_lost_blocks() {
        let dev = flaky(u32::MAX);
        let released = Arc::new(AtomicBool::new(false));
        let r = released.clone();
        let abandon = tokio::time::sleep(Duration::from_millis(30));
        let outcome = shutdown(&dev, FAST, abandon, || async move {
            r.store(true, Ordering::SeqCst);
            Ok(())
        })
        .await;
        match outcome {
            ShutdownOutcome::Abandoned { lost_blocks, attempts } => {
                assert_eq!(lost_blocks, Some(5));
                assert!(attempts >= 2, "only {attempts} attempts");
            }
            other => panic!("expected abandon, got {other:?}"),
        }
        assert!(!released.load(Ordering::SeqCst), "the lock must stay when data is abandoned");
    }

    #[tokio::test]
    async fn release_failure_is_reported_not_fatal() {
        let dev = flaky(0);
        let outcome =
            shutdown(&dev, FAST, std::future::pending(), || async { Err(Error::Config("lock gone".into())) })
                .await;
        assert_eq!(outcome, ShutdownOutcome::Stored { lock_released: false, attempts: 1 });
    }
}
