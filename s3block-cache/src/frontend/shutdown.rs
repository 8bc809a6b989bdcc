//! The end of a frontend: store everything, then release the lock.
//!
//! [`shutdown`] flushes the device until the flush succeeds, waiting longer
//! between attempts by a [`Backoff`] schedule (the store may be down for a
//! while: the data must not be thrown away because the network is), then
//! calls the release hook (which
//! deletes the mount lock). Only the `abandon` future, which the program
//! completes on the user's second SIGINT, ends it with data unstored; then
//! the lock is kept, so the next mount knows the volume was not closed
//! cleanly.
//!
//! A mount that was fenced (its lock taken by another mount, or removed:
//! see [`Fence`](s3block_store::Fence)) is not retried: no flush can
//! succeed, and none should. The release hook then says what is left (the
//! dirty blocks kept in the disk cache, or dropped) and leaves the lock to
//! its holder; the exit code is [`LOCKED`].

use std::future::Future;

/// How long to wait between failed flushes at exit: s3block's one retry
/// schedule. Its default waits up to a second after the first failure,
/// doubling to a minute.
pub use s3block_core::Backoff;
use s3block_core::exit::{CANCELLED, LOCKED, OK};
use s3block_core::{BlockDevice, Error, Result};

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
    /// The mount was fenced: another mount holds the lock (or it was
    /// removed), so nothing more was stored and the lock was left alone.
    Fenced {
        /// What the release hook said: who holds the lock, and how many
        /// dirty blocks were kept in the disk cache or dropped.
        report: String,
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

/// Flushes `device` until it succeeds, waiting between attempts by
/// `backoff`, then calls `release`. Gives up only when `abandon` completes:
/// only the schedule's delays apply, not its budgets. See the module docs.
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
    let mut rng = backoff.rng();
    let mut attempts = 0u32;
    let mut lost_blocks = None;
    loop {
        attempts += 1;
        let result = tokio::select! {
            r = device.flush() => r,
            () = &mut abandon => return ShutdownOutcome::Abandoned { lost_blocks, attempts },
        };
        let e = match result {
            Ok(()) => break,
            Err(e) => e,
        };
        if e.is_fenced() {
            // Never an outage: the release hook counts what is left.
            let report = match release().await {
                Err(said) => said.to_string(),
                Ok(()) => e.to_string(),
            };
            return ShutdownOutcome::Fenced { report, attempts };
        }
        if let Error::WriteBack { count, .. } = &e {
            lost_blocks = Some(*count);
        }
        let wait = backoff.delay(attempts, &mut rng);
        tracing::error!(
            attempt = attempts,
            "could not store the written data before exit: {e}; retrying in {:.1}s \
             (the data is kept; send SIGINT twice, e.g. Ctrl-C Ctrl-C, to abandon it)",
            wait.as_secs_f32()
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut abandon => return ShutdownOutcome::Abandoned { lost_blocks, attempts },
        }
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

/// Logs how a [`shutdown`] ended and returns the exit code: 0 when every
/// block is stored, [`CANCELLED`] when the user abandoned data.
/// `before_flushing` says when an abandon with no flush attempted happened
/// (the frontend knows: a busy mount detached, say).
pub fn report(outcome: &ShutdownOutcome, before_flushing: &str) -> u8 {
    match outcome {
        ShutdownOutcome::Stored { lock_released, attempts } => {
            tracing::info!(
                "every block is stored{}{}; exiting",
                if *attempts > 1 { format!(" after {attempts} attempts") } else { String::new() },
                if *lock_released { "" } else { " (the mount lock was left behind)" }
            );
            OK
        }
        ShutdownOutcome::Fenced { report, attempts } => {
            tracing::error!(
                "exiting without storing, after {attempts} attempt(s) to flush: {report}; the mount lock is \
                 left to its holder"
            );
            LOCKED
        }
        ShutdownOutcome::Abandoned { lost_blocks, attempts } => {
            let lost = match lost_blocks {
                Some(n) => format!("{n} written block(s) were NOT stored and are lost"),
                None => "written blocks not stored yet, if any, are lost".to_owned(),
            };
            let when = if *attempts == 0 {
                before_flushing.to_owned()
            } else {
                format!("after {attempts} attempts to store")
            };
            tracing::error!(
                "abandoned at the user's request {when}: {lost}; the mount lock is kept to mark the volume \
                 as not cleanly unmounted"
            );
            CANCELLED
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::ops::Range;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::time::Duration;

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

    /// Short waits, seeded so each run draws the same ones.
    fn fast() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_millis(400)).with_seed(3)
    }

    /// Lets every task that can run run, without moving the (paused) clock.
    async fn settle() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_stored_then_releases() {
        let dev = flaky(3);
        let released = Arc::new(AtomicBool::new(false));
        let r = released.clone();
        let started = tokio::time::Instant::now();
        let outcome = shutdown(&dev, fast(), std::future::pending(), || async move {
            r.store(true, Ordering::SeqCst);
            Ok(())
        })
        .await;
        assert_eq!(outcome, ShutdownOutcome::Stored { lock_released: true, attempts: 4 });
        assert_eq!(dev.flushes.load(Ordering::SeqCst), 4);
        assert!(released.load(Ordering::SeqCst));
        // Three waits, the schedule's, exactly.
        let schedule = fast();
        let mut rng = schedule.rng();
        let waits: Duration = (1..=3).map(|n| schedule.delay(n, &mut rng)).sum();
        assert_eq!(started.elapsed(), waits);
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_again_exactly_at_each_wait_until_abandoned() {
        let schedule = fast();
        let mut rng = schedule.rng();
        let waits: Vec<Duration> = (1..=4).map(|n| schedule.delay(n, &mut rng)).collect();
        let ms = Duration::from_millis(1);
        assert!(waits.iter().all(|w| *w > ms), "the seed draws waits to look inside: {waits:?}");
        let dev = Arc::new(flaky(u32::MAX));
        let released = Arc::new(AtomicBool::new(false));
        let (abandon, abandoned) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let (dev, released) = (dev.clone(), released.clone());
            async move {
                let abandoned = async {
                    let _ = abandoned.await;
                };
                shutdown(&*dev, schedule, abandoned, || async move {
                    released.store(true, Ordering::SeqCst);
                    Ok(())
                })
                .await
            }
        });
        settle().await;
        assert_eq!(dev.flushes.load(Ordering::SeqCst), 1);
        for (i, wait) in waits.iter().enumerate() {
            tokio::time::advance(*wait - ms).await;
            settle().await;
            assert_eq!(dev.flushes.load(Ordering::SeqCst), i as u32 + 1, "not before wait {i} ({wait:?})");
            tokio::time::advance(ms).await;
            settle().await;
            assert_eq!(dev.flushes.load(Ordering::SeqCst), i as u32 + 2, "at the end of wait {i} ({wait:?})");
        }
        abandon.send(()).expect("the shutdown waits");
        let outcome = task.await.expect("the shutdown task ends");
        assert_eq!(outcome, ShutdownOutcome::Abandoned { lost_blocks: Some(5), attempts: 5 });
        assert!(!released.load(Ordering::SeqCst), "the lock must stay when data is abandoned");
    }

    #[tokio::test(start_paused = true)]
    async fn release_failure_is_reported_not_fatal() {
        let dev = flaky(0);
        let outcome = shutdown(&dev, fast(), std::future::pending(), || async {
            Err(Error::Config("lock gone".into()))
        })
        .await;
        assert_eq!(outcome, ShutdownOutcome::Stored { lock_released: false, attempts: 1 });
    }

    /// A device fenced from the start: every flush says so.
    #[derive(Debug)]
    struct FencedFlush(AtomicU32);

    #[async_trait]
    impl BlockDevice for FencedFlush {
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
            self.0.fetch_add(1, Ordering::SeqCst);
            let fenced = Error::Fenced { key: "vol/s3backer-mounted".into(), now: "now held by b".into() };
            Err(Error::WriteBack { count: 2, first: BlockId(1), source: Box::new(fenced) })
        }
    }

    /// A fenced flush is not retried: one attempt, the hook's report, exit 4.
    #[tokio::test(start_paused = true)]
    async fn a_fenced_mount_is_not_retried() {
        let dev = FencedFlush(AtomicU32::new(0));
        let started = tokio::time::Instant::now();
        let outcome = shutdown(&dev, fast(), std::future::pending(), || async {
            Err(Error::Fenced { key: "vol/s3backer-mounted".into(), now: "now held by b; 2 dropped".into() })
        })
        .await;
        assert_eq!(dev.0.load(Ordering::SeqCst), 1);
        assert_eq!(started.elapsed(), Duration::ZERO, "a fenced flush waited for a retry");
        let ShutdownOutcome::Fenced { report: said, attempts: 1 } = &outcome else {
            panic!("expected Fenced, got {outcome:?}")
        };
        assert!(said.contains("2 dropped"), "{said}");
        assert_eq!(report(&outcome, "early"), LOCKED);
    }

    #[test]
    fn the_exit_code_says_whether_everything_is_stored() {
        assert_eq!(report(&ShutdownOutcome::Stored { lock_released: false, attempts: 3 }, "early"), OK);
        let abandoned = ShutdownOutcome::Abandoned { lost_blocks: Some(2), attempts: 0 };
        assert_eq!(report(&abandoned, "early"), CANCELLED);
    }
}
