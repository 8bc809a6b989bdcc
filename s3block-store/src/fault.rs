//! A seeded fault-injecting `ObjectStore` wrapper, for tests and reliability work.
//!
//! [`FaultStore`] fails requests at a configured rate with transient errors
//! (a 503-like server error or a timeout) and delays them (a base latency
//! plus occasional spikes), or drops the connection (a reset, reported the
//! way the HTTP client reports a real one, so it takes the same path through
//! [`classify`](crate::classify)). All choices come from one seeded RNG, so a run
//! with the same seed and the same request order replays the same faults.
//! Faults can be switched on and off while the store is in use.
//!
//! Half the injected errors happen before the request reaches the inner store
//! and half after it (the request took effect but its answer was lost), which
//! is what makes retried writes and conditional creates interesting.

use std::fmt;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use s3block_core::StoreErrorKind;

/// The error a [`FaultStore`] injects.
#[derive(Debug, Clone, thiserror::Error)]
#[error("injected fault: {what}")]
pub struct InjectedFault {
    what: &'static str,
    transient: bool,
}

impl InjectedFault {
    /// A fault that retrying may clear (what [`FaultStore`] injects).
    pub fn transient(what: &'static str) -> Self {
        InjectedFault { what, transient: true }
    }

    /// A fault that retrying will not clear (for tests of the no-retry path).
    pub fn permanent(what: &'static str) -> Self {
        InjectedFault { what, transient: false }
    }

    /// How s3block classifies this fault.
    pub fn kind(&self) -> StoreErrorKind {
        if self.transient { StoreErrorKind::Transient } else { StoreErrorKind::Permanent }
    }

    /// This fault as an `object_store` error.
    pub fn into_error(self) -> object_store::Error {
        object_store::Error::Generic { store: "fault", source: Box::new(self) }
    }
}

/// What a [`FaultStore`] injects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultConfig {
    /// Probability (0..=1) that a request fails with a 503-like server error.
    pub error_rate: f64,
    /// Probability (0..=1) that a request fails with a timeout.
    pub timeout_rate: f64,
    /// Probability (0..=1) that a request fails with a permanent (400-like) error.
    pub permanent_rate: f64,
    /// Probability (0..=1) that the connection is dropped: an HTTP error of
    /// kind "interrupted" around an I/O `ConnectionReset`, as a server
    /// closing the socket mid-request gives.
    pub reset_rate: f64,
    /// Delay added to every request.
    pub latency: Duration,
    /// Probability (0..=1) of an extra delay of `spike`.
    pub spike_rate: f64,
    /// The extra delay of a spike.
    pub spike: Duration,
}

impl FaultConfig {
    /// Transient errors (half server errors, half timeouts) at `rate`.
    pub fn errors(rate: f64) -> Self {
        FaultConfig { error_rate: rate / 2.0, timeout_rate: rate / 2.0, ..Default::default() }
    }
}

enum Fault {
    None,
    Before(object_store::Error),
    After(object_store::Error),
}

/// A dropped connection, as the S3 client reports one.
fn connection_reset() -> object_store::Error {
    use object_store::client::{HttpError, HttpErrorKind};
    let io =
        std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer (injected fault)");
    object_store::Error::Generic {
        store: "fault",
        source: Box::new(HttpError::new(HttpErrorKind::Interrupted, io)),
    }
}

/// An `ObjectStore` that injects seeded errors and latency in front of `T`.
#[derive(Debug)]
pub struct FaultStore<T> {
    inner: T,
    config: Mutex<FaultConfig>,
    rng: Mutex<StdRng>,
    enabled: AtomicBool,
    injected: AtomicU64,
}

impl<T: ObjectStore> FaultStore<T> {
    /// Wraps `inner`; faults are enabled from the start.
    pub fn new(inner: T, config: FaultConfig, seed: u64) -> Self {
        FaultStore {
            inner,
            config: Mutex::new(config),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            enabled: AtomicBool::new(true),
            injected: AtomicU64::new(0),
        }
    }

    /// Switches fault injection on or off.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    /// Replaces the fault configuration.
    pub fn set_config(&self, config: FaultConfig) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// How many errors were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// Decides this request's fate and sleeps its latency.
    async fn roll(&self) -> Fault {
        if !self.enabled.load(Ordering::SeqCst) {
            return Fault::None;
        }
        let (delay, fault) = {
            let cfg = self.config.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let mut delay = cfg.latency;
            if cfg.spike_rate > 0.0 && rng.random_bool(cfg.spike_rate.clamp(0.0, 1.0)) {
                delay += cfg.spike;
            }
            let x: f64 = rng.random();
            let after: bool = rng.random();
            let transient = cfg.error_rate + cfg.timeout_rate;
            let fault = if x < cfg.error_rate {
                Some(InjectedFault::transient("503 Service Unavailable").into_error())
            } else if x < transient {
                Some(InjectedFault::transient("request timed out").into_error())
            } else if x < transient + cfg.permanent_rate {
                Some(InjectedFault::permanent("400 Bad Request").into_error())
            } else if x < transient + cfg.permanent_rate + cfg.reset_rate {
                Some(connection_reset())
            } else {
                None
            };
            let fault = match fault {
                None => Fault::None,
                Some(f) if after => Fault::After(f),
                Some(f) => Fault::Before(f),
            };
            (delay, fault)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if !matches!(fault, Fault::None) {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        fault
    }

    /// Runs `op` under this request's fault.
    async fn run<R>(&self, op: impl std::future::Future<Output = Result<R>>) -> Result<R> {
        match self.roll().await {
            Fault::None => op.await,
            Fault::Before(e) => Err(e),
            Fault::After(e) => {
                let _ = op.await;
                Err(e)
            }
        }
    }

    /// A stream that fails at once when this request draws a fault.
    fn stream<I: Send + 'static>(&self, s: BoxStream<'static, Result<I>>) -> BoxStream<'static, Result<I>> {
        let fault = {
            let cfg = self.config.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let x: f64 = rng.random();
            self.enabled.load(Ordering::SeqCst) && x < cfg.error_rate + cfg.timeout_rate + cfg.reset_rate
        };
        if fault {
            self.injected.fetch_add(1, Ordering::SeqCst);
            futures::stream::once(async {
                Err(InjectedFault::transient("503 Service Unavailable").into_error())
            })
            .boxed()
        } else {
            s
        }
    }
}

impl<T> fmt::Display for FaultStore<T>
where
    T: fmt::Display,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<T: ObjectStore> ObjectStore for FaultStore<T> {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.run(self.inner.put_opts(location, payload, opts)).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.run(self.inner.put_multipart_opts(location, opts)).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.run(self.inner.get_opts(location, options)).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.run(self.inner.get_ranges(location, ranges)).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let s = self.inner.delete_stream(locations);
        self.stream(s)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let s = self.inner.list(prefix);
        self.stream(s)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let s = self.inner.list_with_offset(prefix, offset);
        self.stream(s)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.run(self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.run(self.inner.copy_opts(from, to, options)).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.run(self.inner.rename_opts(from, to, options)).await
    }
}
