//! Retrying transient store errors with exponential backoff and full jitter.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use rand::Rng;
use rand::rngs::StdRng;
use s3block_core::{Backoff, RequestCounters, Retries, StoreErrorKind};

use crate::counting::PAGE;
use crate::error::{TargetError, classify, is_missing_bucket, root_cause};

/// After this many failed attempts in a row, each further retry is logged
/// as a warning (the first ones, which faults of a moment explain, only at
/// debug level).
const UNREACHABLE_AFTER: u32 = 3;

/// How transient errors are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Upper bound of the first wait.
    pub(crate) initial_backoff: Duration,
    /// Upper bound of any one wait.
    pub(crate) max_backoff: Duration,
    /// No retry starts after this long since the first attempt.
    pub(crate) max_elapsed: Duration,
    /// Attempts at most (the first included); 1 disables retries.
    pub(crate) max_attempts: u32,
    /// Seed of the jitter RNG; `None` seeds from the OS.
    pub(crate) seed: Option<u64>,
    /// Until the store has answered once, no retry starts after this long
    /// since the first attempt (see [`RetryStore`]).
    pub(crate) connect_budget: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(60),
            max_attempts: 20,
            seed: None,
            connect_budget: Duration::from_secs(10),
        }
    }
}

impl RetryConfig {
    /// The first wait is at most `d`.
    pub fn initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// No one wait is longer than `d`.
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// No retry starts after `d` since the first attempt.
    pub fn max_elapsed(mut self, d: Duration) -> Self {
        self.max_elapsed = d;
        self
    }

    /// At most `n` attempts, the first included (1 disables retries).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Seeds the jitter, so that a test replays its waits exactly.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Until the store has answered once, no retry starts after `d` since
    /// the first attempt.
    pub fn connect_budget(mut self, d: Duration) -> Self {
        self.connect_budget = d;
        self
    }

    /// No retries at all.
    pub fn none() -> Self {
        RetryConfig { max_attempts: 1, ..Default::default() }
    }

    /// The schedule of the waits: `initial_backoff` doubling to
    /// `max_backoff` with full jitter, at most `max_attempts` attempts and
    /// no retry after `max_elapsed`, seeded with `seed` when given. (The
    /// shorter budget before the store first answers is applied on top.)
    pub fn backoff(&self) -> Backoff {
        let schedule = Backoff::new(self.initial_backoff, self.max_backoff)
            .with_max_attempts(self.max_attempts)
            .with_max_elapsed(self.max_elapsed);
        match self.seed {
            Some(seed) => schedule.with_seed(seed),
            None => schedule,
        }
    }
}

/// The endpoint and bucket a store talks to, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    endpoint: String,
    bucket: String,
    /// What the requests are signed with, for the refused-credentials message.
    credentials: Option<String>,
}

#[derive(Debug)]
struct Policy {
    config: RetryConfig,
    /// The waits between attempts.
    schedule: Backoff,
    /// Seeds each request's run of the schedule, so a seeded store replays
    /// while concurrent requests still draw different waits.
    rng: Mutex<StdRng>,
    counters: Arc<RequestCounters>,
    target: Option<Target>,
    /// The store has answered a request (anything but a transient failure).
    answered: AtomicBool,
    /// "cannot reach" was logged.
    warned: AtomicBool,
}

impl Policy {
    /// How long retries may go on: short until the store has answered once.
    fn budget(&self) -> Duration {
        if self.answered.load(Ordering::Relaxed) {
            self.config.max_elapsed
        } else {
            self.config.max_elapsed.min(self.config.connect_budget)
        }
    }

    fn endpoint(&self) -> &str {
        self.target.as_ref().map_or("the object store", |t| t.endpoint.as_str())
    }

    /// Notes the outcome of one attempt: whether the store answered, and a
    /// warning the first time it could not be reached at all.
    fn observe(&self, kind: Option<StoreErrorKind>, err: Option<&object_store::Error>) {
        match (kind, err) {
            (Some(StoreErrorKind::Transient), Some(e)) => {
                if !self.answered.load(Ordering::Relaxed) && !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "cannot reach {}: {}; retrying for up to {:?}",
                        self.endpoint(),
                        root_cause(e),
                        self.budget()
                    );
                }
            }
            _ => self.answered.store(true, Ordering::Relaxed),
        }
    }

    /// The error a request finally fails with: named after the endpoint and
    /// bucket when they are known and the user can fix the cause.
    fn finish(
        &self,
        err: object_store::Error,
        kind: StoreErrorKind,
        started: tokio::time::Instant,
    ) -> object_store::Error {
        let Some(t) = &self.target else { return err };
        let message = match kind {
            StoreErrorKind::Transient if !self.answered.load(Ordering::Relaxed) => format!(
                "cannot reach {} (bucket {:?}): {}; gave up after {:.0?}: check the endpoint and that the server is running",
                t.endpoint,
                t.bucket,
                root_cause(&err),
                started.elapsed()
            ),
            StoreErrorKind::NotFound if is_missing_bucket(&err) => format!(
                "bucket {:?} does not exist at {}: check the bucket name in the store URL, the endpoint and the region",
                t.bucket, t.endpoint
            ),
            StoreErrorKind::Unauthorized => {
                let message = match &t.credentials {
                    Some(what) if what.starts_with("no credentials") => {
                        format!("{} refused unsigned requests to bucket {:?}: {what}", t.endpoint, t.bucket)
                    }
                    what => format!(
                        "{} refused the credentials for bucket {:?}{}: check the access key, its secret and the key's permissions on the bucket",
                        t.endpoint,
                        t.bucket,
                        what.as_deref().map(|w| format!(" ({w})")).unwrap_or_default()
                    ),
                };
                // The server's XML says no more than its status and code.
                return TargetError::summarised(message, StoreErrorKind::Unauthorized, denial_summary(&err))
                    .into_error();
            }
            _ => return err,
        };
        TargetError::new(message, err).into_error()
    }

    /// Starts the retries of one request, now.
    fn start(&self) -> Retries {
        let seed = self.rng.lock().unwrap_or_else(|p| p.into_inner()).random();
        self.schedule.clone().with_seed(seed).start()
    }

    /// The wait before the next retry, or `None` to give up: the schedule,
    /// within the budget of the moment (short until the store answered).
    fn next_wait(&self, retries: &mut Retries) -> Option<Duration> {
        retries.next_delay_within(self.budget())
    }

    async fn run<R, F, Fut>(&self, what: &str, mut op: F) -> Result<R>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        let mut retries = self.start();
        loop {
            match op().await {
                Ok(v) => {
                    self.observe(None, None);
                    return Ok(v);
                }
                Err(e) => {
                    let kind = classify(&e);
                    self.observe(Some(kind), Some(&e));
                    if kind == StoreErrorKind::Transient
                        && let Some(wait) = self.next_wait(&mut retries)
                    {
                        let retry = retries.retries();
                        if retry >= UNREACHABLE_AFTER {
                            // A failure that persists is worth telling without --debug.
                            tracing::warn!(
                                "{what} failed {retry} times: the store is unreachable or failing ({e}); \
                                 retrying in {:.1}s",
                                wait.as_secs_f32()
                            );
                        } else {
                            tracing::debug!("{what}: {e}; retry {retry} in {wait:?}");
                        }
                        self.counters.add_retries(1);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    if !matches!(kind, StoreErrorKind::NotFound | StoreErrorKind::AlreadyExists) {
                        self.counters.add_errors(1);
                    }
                    return Err(self.finish(e, kind, retries.started()));
                }
            }
        }
    }
}

/// Retrying transient store errors with exponential backoff and full jitter.
///
/// [`RetryStore`] wraps an `ObjectStore` and retries each request whose
/// error is transient (see [`classify`](crate::classify)): 5xx answers,
/// timeouts, connection failures and resets. The waits follow the shared
/// [`Backoff`] schedule ([`RetryConfig::backoff`]): the wait before retry
/// `n` is drawn uniformly from `0..=min(max_backoff, initial_backoff *
/// 2^(n-1))` ("full jitter"), and no retry starts once `max_elapsed` has
/// passed since the first attempt. Permanent errors (4xx, auth, missing
/// bucket) fail at once.
///
/// # One retry loop, not two
///
/// `object_store`'s S3 client has its own retry loop. s3block turns it off
/// (`max_retries = 0`, see [`StoreConfig`](crate::StoreConfig)) so that there
/// is exactly one loop: this one, which counts retries for the statistics,
/// takes a seeded RNG and tokio's (pausable) clock so tests replay, and
/// bounds the total time of a block request in one place.
///
/// # A short budget until the store first answers
///
/// Block I/O rides out outages of up to `max_elapsed` (a minute by
/// default): giving up sooner would fail writes the cache then has to keep.
/// But until the store has answered once, an error is far more likely a
/// mistyped endpoint or a server that is not running, and a user starting a
/// mount should not wait a minute to learn that. So until the first answer
/// (any answer that is not a transient failure), retries stop after
/// `connect_budget` (10 s by default); the first failure is logged once as
/// "cannot reach ENDPOINT: CAUSE; retrying for up to 10s".
///
/// When the store knows its endpoint and bucket ([`RetryStore::with_target`],
/// set for S3 by [`StoreConfig`](crate::StoreConfig)), the errors a user can
/// fix come out naming them: an unreachable endpoint, a bucket that does not
/// exist (S3 `NoSuchBucket`, which `object_store` reports as "not found",
/// like a missing object), and refused credentials.
///
/// GET bodies are read inside the loop (objects are blocks, a few MiB at
/// most), so a connection reset in the middle of a body is retried too.
/// A bulk delete is retried per batch of 1000 keys; keys already gone count as
/// deleted. A listing that fails midway resumes after the last key seen
/// (listing is ordered on S3).
#[derive(Debug)]
pub struct RetryStore<T> {
    inner: Arc<T>,
    policy: Arc<Policy>,
}

impl<T: ObjectStore> RetryStore<T> {
    /// Wraps `inner`; retries are counted into `counters`.
    pub fn new(inner: T, config: RetryConfig, counters: Arc<RequestCounters>) -> Self {
        let schedule = config.backoff();
        let rng = schedule.rng();
        RetryStore {
            inner: Arc::new(inner),
            policy: Arc::new(Policy {
                config,
                schedule,
                rng: Mutex::new(rng),
                counters,
                target: None,
                answered: AtomicBool::new(false),
                warned: AtomicBool::new(false),
            }),
        }
    }

    /// Names the endpoint and bucket in the errors a user can fix (see
    /// [`RetryStore`]). Call before the store is shared.
    pub fn with_target(mut self, endpoint: impl Into<String>, bucket: impl Into<String>) -> Self {
        let target = Target { endpoint: endpoint.into(), bucket: bucket.into(), credentials: None };
        match Arc::get_mut(&mut self.policy) {
            Some(p) => p.target = Some(target),
            None => tracing::debug!("RetryStore::with_target after sharing: {target:?} not set"),
        }
        self
    }

    /// Says, in the message for refused credentials, what the requests are
    /// signed with (`"no credentials (none found; tried ...)"`, `"the access
    /// file /root/.s3backer_passwd"`). Call after
    /// [`with_target`](Self::with_target), before the store is shared.
    pub fn with_credentials(mut self, what: impl Into<String>) -> Self {
        match Arc::get_mut(&mut self.policy).and_then(|p| p.target.as_mut()) {
            Some(t) => t.credentials = Some(what.into()),
            None => tracing::debug!("RetryStore::with_credentials without a target or after sharing"),
        }
        self
    }

    /// The wrapped store.
    pub fn inner(&self) -> &T {
        &self.inner
    }
}

impl<T: fmt::Display> fmt::Display for RetryStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RetryStore({})", self.inner)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<T: ObjectStore> ObjectStore for RetryStore<T> {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.policy.run("PUT", || self.inner.put_opts(location, payload.clone(), opts.clone())).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.policy.run("multipart PUT", || self.inner.put_multipart_opts(location, opts.clone())).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.policy
            .run("GET", || async {
                let GetResult { payload, meta, range, attributes, extensions } =
                    self.inner.get_opts(location, options.clone()).await?;
                let payload = match payload {
                    GetResultPayload::Stream(s) => {
                        let body = buffer(s).await?;
                        GetResultPayload::Stream(futures::stream::once(async move { Ok(body) }).boxed())
                    }
                    file => file,
                };
                Ok(GetResult { payload, meta, range, attributes, extensions })
            })
            .await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.policy.run("GET ranges", || self.inner.get_ranges(location, ranges)).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let inner = self.inner.clone();
        let policy = self.policy.clone();
        locations
            .chunks(PAGE as usize)
            .then(move |chunk| {
                let inner = inner.clone();
                let policy = policy.clone();
                async move {
                    let (paths, bad): (Vec<_>, Vec<_>) = chunk.into_iter().partition(|r| r.is_ok());
                    let paths: Vec<Path> = paths.into_iter().filter_map(|r| r.ok()).collect();
                    let mut first = true;
                    let done = policy
                        .run("bulk DELETE", || {
                            let retried = !first;
                            first = false;
                            let input = futures::stream::iter(paths.clone().into_iter().map(Ok)).boxed();
                            let out = inner.delete_stream(input);
                            async move {
                                let results: Vec<Result<Path>> = out.collect().await;
                                let mut ok = Vec::with_capacity(results.len());
                                for r in results {
                                    match r {
                                        Ok(p) => ok.push(Ok(p)),
                                        // A retried batch finds what the first attempt deleted gone.
                                        Err(e) if retried && classify(&e) == StoreErrorKind::NotFound => {}
                                        Err(e) if classify(&e) == StoreErrorKind::Transient => return Err(e),
                                        Err(e) => ok.push(Err(e)),
                                    }
                                }
                                Ok(ok)
                            }
                        })
                        .await;
                    let mut out: Vec<Result<Path>> = bad;
                    match done {
                        Ok(v) => out.extend(v),
                        Err(e) => out.push(Err(e)),
                    }
                    futures::stream::iter(out)
                }
            })
            .flatten()
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        resumable_list(self.inner.clone(), self.policy.clone(), prefix.cloned(), None)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        resumable_list(self.inner.clone(), self.policy.clone(), prefix.cloned(), Some(offset.clone()))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.policy.run("LIST", || self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.policy.run("COPY", || self.inner.copy_opts(from, to, options.clone())).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.policy.run("RENAME", || self.inner.rename_opts(from, to, options.clone())).await
    }
}

async fn buffer(s: BoxStream<'static, Result<Bytes>>) -> Result<Bytes> {
    let chunks: Vec<Bytes> = s.try_collect().await?;
    if chunks.len() == 1 {
        return Ok(chunks.into_iter().next().unwrap_or_default());
    }
    let mut all = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in chunks {
        all.extend_from_slice(&c);
    }
    Ok(Bytes::from(all))
}

struct ListState<T> {
    inner: Arc<T>,
    policy: Arc<Policy>,
    prefix: Option<Path>,
    last: Option<Path>,
    stream: Option<BoxStream<'static, Result<ObjectMeta>>>,
    retries: Retries,
    done: bool,
}

/// A listing that, on a transient error, starts again after the last key seen.
fn resumable_list<T: ObjectStore>(
    inner: Arc<T>,
    policy: Arc<Policy>,
    prefix: Option<Path>,
    offset: Option<Path>,
) -> BoxStream<'static, Result<ObjectMeta>> {
    let retries = policy.start();
    let state = ListState { inner, policy, prefix, last: offset, stream: None, retries, done: false };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let stream = st.stream.get_or_insert_with(|| match &st.last {
                Some(off) => st.inner.list_with_offset(st.prefix.as_ref(), off),
                None => st.inner.list(st.prefix.as_ref()),
            });
            match stream.next().await {
                None => {
                    st.policy.observe(None, None);
                    return None;
                }
                Some(Ok(meta)) => {
                    st.policy.observe(None, None);
                    st.last = Some(meta.location.clone());
                    return Some((Ok(meta), st));
                }
                Some(Err(e)) => {
                    st.stream = None;
                    let kind = classify(&e);
                    st.policy.observe(Some(kind), Some(&e));
                    if kind == StoreErrorKind::Transient
                        && let Some(wait) = st.policy.next_wait(&mut st.retries)
                    {
                        st.policy.counters.add_retries(1);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    st.policy.counters.add_errors(1);
                    st.done = true;
                    let e = st.policy.finish(e, kind, st.retries.started());
                    return Some((Err(e), st));
                }
            }
        }
    })
    .boxed()
}
/// A refusal in a few words: the HTTP status and the S3 error code of the
/// answer (`"HTTP 403, AccessDenied"`), instead of the whole XML body.
fn denial_summary(err: &object_store::Error) -> String {
    let text = crate::error::root_cause(err);
    let full = err.to_string();
    let status =
        ["403", "401"].into_iter().find(|s| full.contains(&format!("status code: {s}")) || text.contains(s));
    let code = text
        .split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .filter(|c| !c.is_empty() && c.len() < 64);
    match (status, code) {
        (Some(s), Some(c)) => format!("HTTP {s}, {c}"),
        (None, Some(c)) => c.to_owned(),
        (Some(s), None) => format!("HTTP {s}"),
        (None, None) => "access denied".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_budgets_and_the_setters() {
        let c = RetryConfig::default();
        assert_eq!(c.connect_budget, Duration::from_secs(10));
        assert_eq!(c.max_elapsed, Duration::from_secs(60));
        let c = c.max_attempts(3).seed(7).connect_budget(Duration::from_secs(2));
        assert_eq!((c.max_attempts, c.seed, c.connect_budget), (3, Some(7), Duration::from_secs(2)));
    }
}
