//! Counts of requests made to the object store: what the user is billed for.
//!
//! Every request is counted twice over: once by method (GET, PUT, DELETE,
//! LIST: what prices apply to) and once by what it was for (a block fetched
//! on demand, fetched ahead of a reader, fetched to complete a partly written
//! block before its upload, a block uploaded or deleted, the lock and the
//! descriptor, a listing). Each request falls in exactly one class of each,
//! so the classes add up to the method totals:
//!
//! - `gets == block_fetches + read_ahead_fetches + upload_fetches + metadata_gets`
//! - `puts == block_uploads + metadata_puts`
//! - `bulk_deletes == block_deletes + metadata_deletes`
//!
//! Why a block is fetched is known only to the cache that asks; it runs the
//! fetch inside [`with_fetch_reason`], and the counting layer below reads
//! [`fetch_reason`] when it counts the GET.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

/// A snapshot of [`RequestCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// GET requests (including HEAD).
    pub gets: u64,
    /// PUT requests.
    pub puts: u64,
    /// Keys deleted (a bulk delete of 1000 keys counts 1000 here).
    pub deletes: u64,
    /// DELETE requests (S3 multi-object deletes, up to 1000 keys each).
    pub bulk_deletes: u64,
    /// LIST requests (pages).
    pub lists: u64,
    /// Bytes sent in request bodies.
    pub bytes_sent: u64,
    /// Bytes received in response bodies.
    pub bytes_received: u64,
    /// Bytes of block objects received for fetches a reader waited for (the
    /// GETs counted in [`block_fetches`](Self::block_fetches)): divided by
    /// the cache's misses, the bytes a read miss downloads.
    pub fetch_bytes_received: u64,
    /// GETs of block objects that asked for a byte range, not the whole
    /// object (ranged reads of raw blocks); counted in the GETs above too.
    pub ranged_gets: u64,
    /// Requests that failed and were tried again (each attempt is counted
    /// in the other fields too).
    pub retries: u64,
    /// Requests that finally failed.
    pub errors: u64,
    /// GETs of block objects a reader (or a command) waited for.
    pub block_fetches: u64,
    /// GETs of block objects fetched ahead of a sequential reader.
    pub read_ahead_fetches: u64,
    /// GETs of block objects to complete a partly written block before its upload.
    pub upload_fetches: u64,
    /// PUTs of block objects.
    pub block_uploads: u64,
    /// DELETE requests for block objects (blocks written as zeros, discarded or erased).
    pub block_deletes: u64,
    /// GETs of other objects (the mount lock, the volume descriptor, probes)
    /// and HEADs of any (block 0's geometry at open).
    pub metadata_gets: u64,
    /// PUTs of other objects: the mount lock, the volume descriptor, probes.
    pub metadata_puts: u64,
    /// DELETE requests for other objects: the mount lock at unmount, probes.
    pub metadata_deletes: u64,
    /// How long the requests took, by method.
    pub latency: RequestLatencies,
    /// [`retries`](Self::retries) by method.
    pub retries_by_method: MethodCounts,
    /// [`errors`](Self::errors) by method.
    pub errors_by_method: MethodCounts,
    /// The bandwidth caps and the time requests waited for them.
    pub bandwidth: BandwidthCounts,
}

/// The bandwidth caps of a store (bytes a second, 0 when uncapped; gauges
/// that a reset keeps) and the time requests waited for them, added up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BandwidthCounts {
    /// Cap on the bytes sent a second.
    pub upload_cap: u64,
    /// Cap on the bytes received a second.
    pub download_cap: u64,
    /// Microseconds uploads waited for the cap.
    pub upload_wait_micros: u64,
    /// Microseconds downloads waited for the cap.
    pub download_wait_micros: u64,
}

/// A count for each request method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MethodCounts {
    /// GET and HEAD requests.
    pub get: u64,
    /// PUT requests (copies too).
    pub put: u64,
    /// DELETE requests.
    pub delete: u64,
    /// LIST requests.
    pub list: u64,
}

/// The upper bounds of the latency histograms' buckets, in milliseconds; a
/// last bucket holds the slower requests. Fixed, so histograms of different
/// mounts and of different moments add up bucket by bucket.
pub const LATENCY_BUCKETS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// A histogram of request latencies: how many requests took up to each of
/// [`LATENCY_BUCKETS_MS`] (not cumulative: each request is in one bucket),
/// the last count those slower than the last bound, and the sum of them all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Requests per bucket; `counts[i]` took more than bucket `i - 1`'s
    /// bound and up to bucket `i`'s; the last, more than the last bound.
    pub counts: [u64; LATENCY_BUCKETS_MS.len() + 1],
    /// The requests' latencies added up, in microseconds.
    pub sum_micros: u64,
}

impl LatencyHistogram {
    /// Requests counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The latency under which `q` (0 to 1) of the requests fall, as a
    /// bucket's upper bound in milliseconds (`None`: without requests, or
    /// in the last bucket, slower than every bound).
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let wanted = ((total as f64 * q.clamp(0.0, 1.0)).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= wanted {
                return LATENCY_BUCKETS_MS.get(i).copied();
            }
        }
        None
    }
}

/// The latency histograms of the requests, by method. An attempt that is
/// retried is one request here too, as in the counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestLatencies {
    /// GET and HEAD requests, until their body was read.
    pub get: LatencyHistogram,
    /// PUT requests (copies too).
    pub put: LatencyHistogram,
    /// DELETE requests.
    pub delete: LatencyHistogram,
    /// LIST requests (a whole listing, however many pages).
    pub list: LatencyHistogram,
}

/// A request method, for [`RequestCounters::observe_latency`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestMethod {
    /// GET or HEAD.
    Get,
    /// PUT or copy.
    Put,
    /// DELETE, single or bulk.
    Delete,
    /// LIST.
    List,
}

/// The live form of a [`LatencyHistogram`].
#[derive(Debug, Default)]
struct LiveHistogram {
    counts: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    sum_micros: AtomicU64,
}

impl LiveHistogram {
    fn observe(&self, took: std::time::Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i =
            LATENCY_BUCKETS_MS.iter().position(|&ms| micros <= ms * 1000).unwrap_or(LATENCY_BUCKETS_MS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LatencyHistogram {
        LatencyHistogram {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }

    fn reset(&self) {
        for c in &self.counts {
            c.store(0, Ordering::Relaxed);
        }
        self.sum_micros.store(0, Ordering::Relaxed);
    }
}

/// Live request counters, shared by the layers that make and retry requests
/// and read by the frontends (the stats file, `s3block info`).
#[derive(Debug, Default)]
pub struct RequestCounters {
    gets: AtomicU64,
    puts: AtomicU64,
    deletes: AtomicU64,
    bulk_deletes: AtomicU64,
    lists: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    fetch_bytes_received: AtomicU64,
    ranged_gets: AtomicU64,
    retries: AtomicU64,
    errors: AtomicU64,
    block_fetches: AtomicU64,
    read_ahead_fetches: AtomicU64,
    upload_fetches: AtomicU64,
    block_uploads: AtomicU64,
    block_deletes: AtomicU64,
    metadata_gets: AtomicU64,
    metadata_puts: AtomicU64,
    metadata_deletes: AtomicU64,
    /// When the current outage began, in milliseconds since the Unix epoch
    /// (0: the store answers). A gauge: [`RequestCounters::reset`] keeps it.
    unreachable_since_ms: AtomicU64,
    /// Requests that failed and wait to be retried, now (a gauge).
    waiting: AtomicU64,
    /// Latency histograms: GET, PUT, DELETE, LIST.
    latency: [LiveHistogram; 4],
    /// [`BandwidthCounts`], in its order.
    bandwidth: [AtomicU64; 4],
    /// Retries and final failures by method, in that order.
    retries_by_method: [AtomicU64; 4],
    errors_by_method: [AtomicU64; 4],
}

/// Whether the store answers, now: what a status line or a metric shows
/// while requests are being retried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreHealth {
    /// When the store stopped answering, if it does not answer now.
    pub unreachable_since: Option<std::time::SystemTime>,
    /// Requests that failed and wait to be retried.
    pub waiting: u64,
}

impl RequestCounters {
    /// Notes that the store stopped answering at `since` (`None`: it
    /// answers again).
    pub fn set_unreachable_since(&self, since: Option<std::time::SystemTime>) {
        let ms = since
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1));
        self.unreachable_since_ms.store(ms, Ordering::Relaxed);
    }

    /// One more request (`true`) or one fewer (`false`) waits to be retried.
    pub fn note_waiting(&self, waits: bool) {
        if waits {
            self.waiting.fetch_add(1, Ordering::Relaxed);
        } else {
            // Never below zero, whatever the order of the calls.
            let _ = self.waiting.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Counts one request of `method` that took `took` in its histogram.
    pub fn observe_latency(&self, method: RequestMethod, took: std::time::Duration) {
        self.latency[method as usize].observe(took);
    }

    /// A request of `method` failed and will be made again: counted in
    /// `retries` and by method.
    pub fn add_retry(&self, method: RequestMethod) {
        self.add_retries(1);
        self.retries_by_method[method as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A request of `method` finally failed: counted in `errors` and by method.
    pub fn add_error(&self, method: RequestMethod) {
        self.add_errors(1);
        self.errors_by_method[method as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records the bandwidth caps, in bytes a second (0: none).
    pub fn set_bandwidth_caps(&self, upload: u64, download: u64) {
        self.bandwidth[0].store(upload, Ordering::Relaxed);
        self.bandwidth[1].store(download, Ordering::Relaxed);
    }

    /// Adds `waited` to the time uploads (`upload`) or downloads waited for their cap.
    pub fn add_bandwidth_wait(&self, upload: bool, waited: std::time::Duration) {
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.bandwidth[if upload { 2 } else { 3 }].fetch_add(micros, Ordering::Relaxed);
    }

    fn bandwidth_counts(&self) -> BandwidthCounts {
        let n = |i: usize| self.bandwidth[i].load(Ordering::Relaxed);
        BandwidthCounts {
            upload_cap: n(0),
            download_cap: n(1),
            upload_wait_micros: n(2),
            download_wait_micros: n(3),
        }
    }

    fn by_method(counts: &[AtomicU64; 4]) -> MethodCounts {
        let n = |m: RequestMethod| counts[m as usize].load(Ordering::Relaxed);
        MethodCounts {
            get: n(RequestMethod::Get),
            put: n(RequestMethod::Put),
            delete: n(RequestMethod::Delete),
            list: n(RequestMethod::List),
        }
    }

    fn latencies(&self) -> RequestLatencies {
        RequestLatencies {
            get: self.latency[RequestMethod::Get as usize].snapshot(),
            put: self.latency[RequestMethod::Put as usize].snapshot(),
            delete: self.latency[RequestMethod::Delete as usize].snapshot(),
            list: self.latency[RequestMethod::List as usize].snapshot(),
        }
    }

    /// Whether the store answers now, and how many requests wait for it.
    pub fn health(&self) -> StoreHealth {
        let ms = self.unreachable_since_ms.load(Ordering::Relaxed);
        StoreHealth {
            unreachable_since: (ms != 0)
                .then(|| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }
}

macro_rules! counter {
    ($($name:ident => $field:ident),* $(,)?) => {
        impl RequestCounters {
            $(
                #[doc = concat!("Adds `n` to `", stringify!($field), "`.")]
                pub fn $name(&self, n: u64) {
                    self.$field.fetch_add(n, Ordering::Relaxed);
                }
            )*

            /// The counts so far.
            pub fn snapshot(&self) -> RequestCounts {
                RequestCounts {
                    $($field: self.$field.load(Ordering::Relaxed),)*
                    latency: self.latencies(),
                    retries_by_method: Self::by_method(&self.retries_by_method),
                    errors_by_method: Self::by_method(&self.errors_by_method),
                    bandwidth: self.bandwidth_counts(),
                }
            }

            /// Sets every counter back to zero (the histograms too; not
            /// the store's health, which says how things are now).
            pub fn reset(&self) {
                $(self.$field.store(0, Ordering::Relaxed);)*
                for h in &self.latency {
                    h.reset();
                }
                for c in self.retries_by_method.iter().chain(&self.errors_by_method).chain(&self.bandwidth[2..]) {
                    c.store(0, Ordering::Relaxed);
                }
            }
        }
    };
}

counter! {
    add_gets => gets,
    add_puts => puts,
    add_deletes => deletes,
    add_bulk_deletes => bulk_deletes,
    add_lists => lists,
    add_bytes_sent => bytes_sent,
    add_bytes_received => bytes_received,
    add_fetch_bytes_received => fetch_bytes_received,
    add_ranged_gets => ranged_gets,
    add_retries => retries,
    add_errors => errors,
    add_block_fetches => block_fetches,
    add_read_ahead_fetches => read_ahead_fetches,
    add_upload_fetches => upload_fetches,
    add_block_uploads => block_uploads,
    add_block_deletes => block_deletes,
    add_metadata_gets => metadata_gets,
    add_metadata_puts => metadata_puts,
    add_metadata_deletes => metadata_deletes,
}

/// What an object request is about, for [`RequestCounters::count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestClass {
    /// A GET or HEAD of a block object.
    BlockGet,
    /// A PUT (or copy) of a block object.
    BlockPut,
    /// A DELETE request whose keys are block objects.
    BlockDelete,
    /// A GET or HEAD of another object (lock, descriptor, probe).
    MetadataGet,
    /// A PUT of another object.
    MetadataPut,
    /// A DELETE request for other objects.
    MetadataDelete,
    /// A LIST request (one page).
    List,
}

impl RequestCounters {
    /// Counts `n` requests of `class`: the method total and the class. A
    /// block GET goes to the class [`fetch_reason`] names. (Keys deleted and
    /// bytes are counted apart.)
    pub fn count(&self, class: RequestClass, n: u64) {
        match class {
            RequestClass::BlockGet => {
                self.add_gets(n);
                match fetch_reason() {
                    FetchReason::Demand => self.add_block_fetches(n),
                    FetchReason::ReadAhead => self.add_read_ahead_fetches(n),
                    FetchReason::Upload => self.add_upload_fetches(n),
                }
            }
            RequestClass::BlockPut => {
                self.add_puts(n);
                self.add_block_uploads(n);
            }
            RequestClass::BlockDelete => {
                self.add_bulk_deletes(n);
                self.add_block_deletes(n);
            }
            RequestClass::MetadataGet => {
                self.add_gets(n);
                self.add_metadata_gets(n);
            }
            RequestClass::MetadataPut => {
                self.add_puts(n);
                self.add_metadata_puts(n);
            }
            RequestClass::MetadataDelete => {
                self.add_bulk_deletes(n);
                self.add_metadata_deletes(n);
            }
            RequestClass::List => self.add_lists(n),
        }
    }
}

impl RequestCounts {
    /// What these requests cost at the given prices (dollars per 1000 requests).
    /// DELETE is free on S3; LIST is billed like PUT.
    pub fn cost(&self, put_per_1000: f64, get_per_1000: f64) -> f64 {
        ((self.puts + self.lists) as f64 * put_per_1000 + self.gets as f64 * get_per_1000) / 1000.0
    }

    /// Every request: GETs, PUTs, DELETE requests and LISTs.
    pub fn total(&self) -> u64 {
        self.gets + self.puts + self.bulk_deletes + self.lists
    }
}

/// Why a block is being fetched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchReason {
    /// A reader (or a command) waits for it.
    #[default]
    Demand,
    /// Read-ahead: fetched before a sequential reader asks.
    ReadAhead,
    /// A partly written block is completed from the stored one before its upload.
    Upload,
}

thread_local! {
    static FETCH_REASON: Cell<FetchReason> = const { Cell::new(FetchReason::Demand) };
}

/// Why the fetch running on this task was started ([`FetchReason::Demand`]
/// outside [`with_fetch_reason`]).
pub fn fetch_reason() -> FetchReason {
    FETCH_REASON.with(Cell::get)
}

/// Runs `fut` with [`fetch_reason`] returning `reason` whenever it is polled,
/// so the requests it makes are counted under that reason.
pub fn with_fetch_reason<F: Future>(reason: FetchReason, fut: F) -> WithFetchReason<F> {
    WithFetchReason { reason, inner: Box::pin(fut) }
}

/// The future [`with_fetch_reason`] returns.
#[derive(Debug)]
pub struct WithFetchReason<F> {
    reason: FetchReason,
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for WithFetchReason<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let previous = FETCH_REASON.with(|r| r.replace(self.reason));
        let out = self.inner.as_mut().poll(cx);
        FETCH_REASON.with(|r| r.set(previous));
        out
    }
}

#[cfg(test)]
mod health_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn health_is_a_gauge_that_reset_keeps() {
        let c = RequestCounters::default();
        assert_eq!(c.health(), StoreHealth::default());
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        c.set_unreachable_since(Some(at));
        c.note_waiting(true);
        c.note_waiting(true);
        c.note_waiting(false);
        c.reset();
        assert_eq!(c.health(), StoreHealth { unreachable_since: Some(at), waiting: 1 });
        c.note_waiting(false);
        c.note_waiting(false);
        c.set_unreachable_since(None);
        assert_eq!(c.health(), StoreHealth::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_caps_are_gauges_and_waits_counters() {
        let c = RequestCounters::default();
        c.set_bandwidth_caps(1000, 0);
        c.add_bandwidth_wait(true, std::time::Duration::from_millis(1500));
        c.add_bandwidth_wait(false, std::time::Duration::from_micros(7));
        let expected = BandwidthCounts {
            upload_cap: 1000,
            download_cap: 0,
            upload_wait_micros: 1_500_000,
            download_wait_micros: 7,
        };
        assert_eq!(c.snapshot().bandwidth, expected);
        c.reset();
        assert_eq!(c.snapshot().bandwidth, BandwidthCounts { upload_cap: 1000, ..Default::default() });
    }

    #[test]
    fn counts_and_resets() {
        let c = RequestCounters::default();
        c.add_puts(3);
        c.add_gets(1000);
        c.add_bytes_sent(10);
        let s = c.snapshot();
        assert_eq!((s.puts, s.gets, s.bytes_sent), (3, 1000, 10));
        assert!((s.cost(5.0, 0.4) - (3.0 * 5.0 + 400.0) / 1000.0).abs() < 1e-9);
        c.reset();
        assert_eq!(c.snapshot(), RequestCounts::default());
    }

    #[tokio::test]
    async fn classes_add_up_to_the_methods_and_reasons_follow_the_future() {
        let c = std::sync::Arc::new(RequestCounters::default());
        c.count(RequestClass::BlockGet, 2);
        let inner = c.clone();
        with_fetch_reason(FetchReason::ReadAhead, async move {
            tokio::task::yield_now().await;
            inner.count(RequestClass::BlockGet, 3);
        })
        .await;
        let inner = c.clone();
        with_fetch_reason(FetchReason::Upload, async move { inner.count(RequestClass::BlockGet, 1) }).await;
        c.count(RequestClass::BlockGet, 1);
        c.count(RequestClass::BlockPut, 4);
        c.count(RequestClass::MetadataPut, 1);
        c.count(RequestClass::MetadataGet, 2);
        c.count(RequestClass::BlockDelete, 1);
        c.count(RequestClass::MetadataDelete, 1);
        c.count(RequestClass::List, 1);
        let s = c.snapshot();
        assert_eq!((s.block_fetches, s.read_ahead_fetches, s.upload_fetches), (3, 3, 1));
        assert_eq!(s.gets, s.block_fetches + s.read_ahead_fetches + s.upload_fetches + s.metadata_gets);
        assert_eq!(s.puts, s.block_uploads + s.metadata_puts);
        assert_eq!(s.bulk_deletes, s.block_deletes + s.metadata_deletes);
        assert_eq!(s.total(), 9 + 5 + 2 + 1);
        assert_eq!(fetch_reason(), FetchReason::Demand);
    }

    #[test]
    fn latencies_fall_in_fixed_buckets_by_method() {
        use std::time::Duration;
        let c = RequestCounters::default();
        c.observe_latency(RequestMethod::Get, Duration::from_micros(5000)); // up to 5 ms
        c.observe_latency(RequestMethod::Get, Duration::from_micros(5001)); // up to 10 ms
        c.observe_latency(RequestMethod::Get, Duration::from_millis(80)); // up to 100 ms
        c.observe_latency(RequestMethod::Put, Duration::from_secs(11)); // slower than every bound
        let l = c.snapshot().latency;
        assert_eq!(&l.get.counts[..6], &[1, 1, 0, 0, 1, 0]);
        assert_eq!((l.get.count(), l.get.sum_micros), (3, 5000 + 5001 + 80_000));
        assert_eq!(l.put.counts[LATENCY_BUCKETS_MS.len()], 1);
        assert_eq!((l.delete.count(), l.list.count()), (0, 0));
        assert_eq!(l.get.quantile_ms(0.5), Some(10));
        assert_eq!(l.get.quantile_ms(1.0), Some(100));
        assert_eq!(l.put.quantile_ms(0.5), None, "slower than every bound");
        assert_eq!(l.delete.quantile_ms(0.5), None, "no requests");
        c.add_retry(RequestMethod::Put);
        c.add_retry(RequestMethod::Put);
        c.add_error(RequestMethod::List);
        let s = c.snapshot();
        assert_eq!((s.retries, s.errors), (2, 1));
        assert_eq!(s.retries_by_method, MethodCounts { put: 2, ..Default::default() });
        assert_eq!(s.errors_by_method, MethodCounts { list: 1, ..Default::default() });
        c.reset();
        assert_eq!(c.snapshot(), RequestCounts::default());
    }
}
