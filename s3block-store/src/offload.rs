//! Codec work (compression, encryption) run beside the runtime's workers,
//! not on them.
//!
//! Compressing a block is milliseconds of CPU. The mount program serves
//! its network I/O on one runtime worker (see
//! `s3block_cache::frontend::FUSE_IO_WORKERS`), so a pass run there would
//! hold up every request behind it, and the passes of blocks uploaded
//! together would take turns on one core: on Garage on two cores, a mount
//! writing incompressible data with deflate in 1 MiB blocks went 36 MB/s
//! with the passes on its one worker, 52 to 53 MB/s with them beside it
//! (55.8 to 58.9 with two workers and the passes on them). Each pass over a whole block
//! therefore runs on tokio's blocking threads ([`tokio::task::spawn_blocking`]),
//! at most [`CodecSlots::for_this_machine`] at once: as many as the machine
//! has cores, so the passes use every core, and no more compressor states
//! (a deflate or zstd context is hundreds of KiB) are held at once than
//! the machine can run.
//!
//! A device without codecs writes and reads its blocks as they are and
//! never comes here. Outside a tokio runtime the pass runs where it is
//! called.

use std::sync::OnceLock;

use s3block_core::{Error, Result};
use tokio::sync::Semaphore;

/// How many codec passes run at once, process-wide.
#[derive(Debug)]
pub(crate) struct CodecSlots {
    slots: Semaphore,
}

impl CodecSlots {
    /// Slots for `n` passes at once (at least one).
    pub(crate) fn new(n: usize) -> Self {
        CodecSlots { slots: Semaphore::new(n.max(1)) }
    }

    /// The process's slots: one per core the process may run on, at most 8.
    pub(crate) fn for_this_machine() -> &'static CodecSlots {
        static SLOTS: OnceLock<CodecSlots> = OnceLock::new();
        SLOTS.get_or_init(|| {
            CodecSlots::new(std::thread::available_parallelism().map_or(2, |n| n.get().min(8)))
        })
    }

    /// Runs `pass` on a blocking thread once a slot is free, and returns
    /// what it returned. `what` names the block in the error given if the
    /// runtime shuts down meanwhile. A panic in `pass` is raised again here,
    /// as if it had run in place.
    pub(crate) async fn run<T, F>(&self, what: &str, pass: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return pass();
        }
        // The semaphore is never closed, so acquiring only waits.
        let _slot = self.slots.acquire().await.map_err(|_| stopped(what))?;
        match tokio::task::spawn_blocking(pass).await {
            Ok(out) => out,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(stopped(what)),
        }
    }
}

fn stopped(what: &str) -> Error {
    Error::Io {
        path: what.to_owned(),
        source: std::io::Error::other(
            "its compression or encryption was stopped: the program is shutting down",
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use futures::FutureExt;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_pass_runs_off_the_runtime_thread_and_returns_its_result() {
        let here = std::thread::current().id();
        let slots = CodecSlots::new(2);
        let ran_on = slots.run("block 1", || Ok(std::thread::current().id())).await.unwrap();
        assert_ne!(ran_on, here, "the pass ran on the runtime's own thread");
        let err = slots.run::<(), _>("block 2", || Err(Error::Config("refused".into()))).await.unwrap_err();
        assert_eq!(err.to_string(), "refused");
    }

    #[test]
    fn outside_a_runtime_the_pass_runs_in_place() {
        let here = std::thread::current().id();
        let slots = CodecSlots::new(1);
        let ran_on = slots.run("block 1", || Ok(std::thread::current().id())).now_or_never();
        assert_eq!(ran_on.expect("finished at once").unwrap(), here);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_more_passes_run_at_once_than_there_are_slots() {
        let slots = Arc::new(CodecSlots::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let passes = (0..8).map(|i| {
            let (slots, running, most) = (slots.clone(), running.clone(), most.clone());
            tokio::spawn(async move {
                slots
                    .run(&format!("block {i}"), move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(i)
                    })
                    .await
            })
        });
        let mut done = Vec::new();
        for p in passes.collect::<Vec<_>>() {
            done.push(p.await.unwrap().unwrap());
        }
        assert_eq!(done, (0..8).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 2, "passes at once");
    }

    #[tokio::test(flavor = "current_thread")]
    #[should_panic(expected = "codec bug")]
    async fn a_panic_in_a_pass_is_raised_again_by_its_caller() {
        let _ = CodecSlots::new(1).run::<(), _>("block 1", || panic!("codec bug")).await;
    }
}
