//! Bandwidth caps: a token bucket per direction, shared by every request of
//! a store.
//!
//! [`BandwidthStore`] makes each PUT wait until the upload bucket holds its
//! body's bytes, and each GET pay for the bytes of its body as they arrive
//! (a stream waits after each chunk, so the server is read no faster than
//! the cap). Only bodies count, not HTTP headers. The bucket lets a tenth
//! of a second's bytes through at once, then holds the average to the
//! cap: concurrent requests share it, so the cap is the store's whole
//! traffic in that direction (s3backer caps each transfer on its own).
//! A request goes into debt rather than waiting for a bucket larger than
//! the burst, so a block bigger than a tenth of a second's bytes still
//! passes, and the requests after it wait for the debt.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use s3block_core::RequestCounters;
use tokio::time::Instant;

/// A token bucket of bytes: `rate` bytes a second, a tenth of a second's
/// worth at once.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    /// Tokens (negative: debt) and when they were counted.
    state: Mutex<(f64, Option<Instant>)>,
    bytes: AtomicU64,
    waited_micros: AtomicU64,
}

impl TokenBucket {
    /// A bucket of `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second.max(1) as f64;
        TokenBucket {
            rate,
            burst: rate / 10.0,
            state: Mutex::new((rate / 10.0, None)),
            bytes: AtomicU64::new(0),
            waited_micros: AtomicU64::new(0),
        }
    }

    /// The cap, in bytes a second.
    pub fn rate(&self) -> u64 {
        self.rate as u64
    }

    /// Bytes that went through.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The time requests spent waiting for the bucket, added up.
    pub fn waited(&self) -> Duration {
        Duration::from_micros(self.waited_micros.load(Ordering::Relaxed))
    }

    /// Takes `n` bytes' tokens, waiting as long as the bucket is in debt;
    /// how long it waited.
    pub async fn take(&self, n: u64) -> Duration {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let (tokens, last) = *state;
            let refilled = match last {
                Some(last) => (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst),
                None => tokens,
            };
            let left = refilled - n as f64;
            *state = (left, Some(now));
            if left < 0.0 { Duration::from_secs_f64(-left / self.rate) } else { Duration::ZERO }
        };
        if !wait.is_zero() {
            self.waited_micros.fetch_add(wait.as_micros() as u64, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        }
        wait
    }
}

/// The caps of a store, in bytes a second; `None`: no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BandwidthLimits {
    /// Bytes sent (PUT bodies).
    pub upload: Option<u64>,
    /// Bytes received (GET bodies).
    pub download: Option<u64>,
}

/// The buckets of a capped store, for its statistics.
#[derive(Debug, Clone, Default)]
pub struct Bandwidth {
    /// The upload bucket, when capped.
    pub upload: Option<Arc<TokenBucket>>,
    /// The download bucket, when capped.
    pub download: Option<Arc<TokenBucket>>,
}

impl Bandwidth {
    /// Buckets for `limits`; `None` when nothing is capped.
    pub fn new(limits: BandwidthLimits) -> Option<Self> {
        let bucket = |rate: Option<u64>| rate.map(|r| Arc::new(TokenBucket::new(r)));
        (limits.upload.is_some() || limits.download.is_some())
            .then(|| Bandwidth { upload: bucket(limits.upload), download: bucket(limits.download) })
    }
}

/// A store whose PUT and GET bodies go through the buckets of a [`Bandwidth`].
#[derive(Debug)]
pub struct BandwidthStore<T> {
    inner: T,
    caps: Bandwidth,
    counters: Arc<RequestCounters>,
}

impl<T> BandwidthStore<T> {
    /// `inner`, capped by `caps`; the caps and the time waited for them go
    /// to `counters` ([`RequestCounts::bandwidth`](s3block_core::RequestCounts::bandwidth)).
    pub fn new(inner: T, caps: Bandwidth, counters: Arc<RequestCounters>) -> Self {
        let rate = |b: &Option<Arc<TokenBucket>>| b.as_ref().map_or(0, |b| b.rate());
        counters.set_bandwidth_caps(rate(&caps.upload), rate(&caps.download));
        BandwidthStore { inner, caps, counters }
    }

    async fn upload(&self, n: u64) {
        if let Some(bucket) = &self.caps.upload {
            self.counters.add_bandwidth_wait(true, bucket.take(n).await);
        }
    }

    async fn download(&self, n: u64) {
        if let Some(bucket) = &self.caps.download {
            self.counters.add_bandwidth_wait(false, bucket.take(n).await);
        }
    }
}

impl<T: fmt::Display> fmt::Display for BandwidthStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BandwidthStore({})", self.inner)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<T: ObjectStore> ObjectStore for BandwidthStore<T> {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.upload(payload.content_length() as u64).await;
        self.inner.put_opts(location, payload, opts).await
    }

    /// Multipart uploads are not capped (s3block writes blocks whole).
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let mut res = self.inner.get_opts(location, options).await?;
        res.payload = match res.payload {
            GetResultPayload::Stream(s) => match self.caps.download.clone() {
                Some(bucket) => GetResultPayload::Stream(
                    s.then({
                        let counters = self.counters.clone();
                        move |chunk| {
                            let (bucket, counters) = (bucket.clone(), counters.clone());
                            async move {
                                if let Ok(b) = &chunk {
                                    counters.add_bandwidth_wait(false, bucket.take(b.len() as u64).await);
                                }
                                chunk
                            }
                        }
                    })
                    .boxed(),
                ),
                None => GetResultPayload::Stream(s),
            },
            GetResultPayload::File(file, path) => {
                self.download(res.range.end.saturating_sub(res.range.start)).await;
                GetResultPayload::File(file, path)
            }
        };
        Ok(res)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let out = self.inner.get_ranges(location, ranges).await?;
        self.download(out.iter().map(|b| b.len() as u64).sum()).await;
        Ok(out)
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) < Duration::from_millis(2)
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_holds_the_average_to_the_rate() {
        let bucket = TokenBucket::new(1000);
        let start = Instant::now();
        // The burst (100 bytes) passes at once; 2,000 more take 2 s.
        for _ in 0..21 {
            bucket.take(100).await;
        }
        assert!(close(start.elapsed(), Duration::from_secs(2)), "{:?}", start.elapsed());
        assert_eq!(bucket.bytes(), 2100);
        assert!(close(bucket.waited(), Duration::from_secs(2)), "{:?}", bucket.waited());
        // Idle time refills no more than the burst.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let start = Instant::now();
        bucket.take(100).await;
        bucket.take(500).await;
        assert!(close(start.elapsed(), Duration::from_millis(500)), "{:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_takers_share_the_bucket() {
        let bucket = Arc::new(TokenBucket::new(1000));
        let start = Instant::now();
        let takers: Vec<_> = (0..10)
            .map(|_| {
                let b = bucket.clone();
                tokio::spawn(async move { b.take(210).await })
            })
            .collect();
        for t in takers {
            t.await.expect("taker");
        }
        // 2,100 bytes, 100 of them the burst: 2 s.
        assert!(close(start.elapsed(), Duration::from_secs(2)), "{:?}", start.elapsed());
    }
}
