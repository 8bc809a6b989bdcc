//! Retrying transient store errors with exponential backoff and full jitter.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
use rand::Rng;
use rand::rngs::StdRng;
use s3block_core::{Backoff, RequestCounters, RequestMethod, Retries, StoreErrorKind};

use crate::bodypool::{BodyOf, BufferPool};
use crate::counting::PAGE;
use crate::error::{TargetError, classify, is_missing_bucket, root_cause};

/// After this many failed attempts in a row of one request, the store is
/// taken to be unreachable and the log says so (the first ones, which
/// faults of a moment explain, only at debug level).
const UNREACHABLE_AFTER: u32 = 3;

/// While the store is unreachable, the log says how long it has been this
/// often (and no more often: an outage of a day is some 1,440 lines).
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// How transient errors are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Upper bound of the first wait.
    pub(crate) initial_backoff: Duration,
    /// Upper bound of any one wait.
    pub(crate) max_backoff: Duration,
    /// No retry starts after this long since the first attempt; `None`:
    /// no time limit.
    pub(crate) max_elapsed: Option<Duration>,
    /// Attempts at most (the first included); 1 disables retries; `None`:
    /// no limit.
    pub(crate) max_attempts: Option<u32>,
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
            max_elapsed: Some(Duration::from_secs(60)),
            max_attempts: Some(20),
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
        self.max_elapsed = Some(d);
        self
    }

    /// At most `n` attempts, the first included (1 disables retries).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// "Hard" retries, for the block I/O of a mounted volume: once the
    /// store has answered, a transient failure is retried without limit of
    /// time or attempts (an outage of an hour delays requests, never fails
    /// them). The connect budget still applies until the store first
    /// answers, so a mount of an unreachable store fails at start.
    pub fn unlimited(mut self) -> Self {
        self.max_elapsed = None;
        self.max_attempts = None;
        self
    }

    /// The I/O timeout of a mounted volume: `None` or zero retries without
    /// limit ([`unlimited`](Self::unlimited)); otherwise no retry starts
    /// `d` after a request's first attempt (and attempts are not counted),
    /// so a request fails within about `d` plus one attempt.
    pub fn io_timeout(self, d: Option<Duration>) -> Self {
        match d {
            Some(d) if !d.is_zero() => RetryConfig { max_elapsed: Some(d), max_attempts: None, ..self },
            _ => self.unlimited(),
        }
    }

    /// Whether a request may be retried without limit (once the store has
    /// answered).
    pub fn is_unlimited(&self) -> bool {
        self.max_elapsed.is_none() && self.max_attempts.is_none()
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
        RetryConfig { max_attempts: Some(1), ..Default::default() }
    }

    /// The schedule of the waits: `initial_backoff` doubling to
    /// `max_backoff` with full jitter, at most `max_attempts` attempts and
    /// no retry after `max_elapsed` (each when set), seeded with `seed` when
    /// given. (The shorter budget before the store first answers is applied
    /// on top.)
    pub fn backoff(&self) -> Backoff {
        match self.max_elapsed {
            Some(d) => self.waits().with_max_elapsed(d),
            None => self.waits(),
        }
    }

    /// The waits and the attempt limit, without the time limit: the store
    /// applies that itself, cutting the last wait to end at the limit, so
    /// that a request gives up after its budget, not some seconds before.
    fn waits(&self) -> Backoff {
        let mut schedule = Backoff::new(self.initial_backoff, self.max_backoff);
        if let Some(n) = self.max_attempts {
            schedule = schedule.with_max_attempts(n);
        }
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
    /// The outage going on, if any (see [`RetryStore`], "Outages in the log").
    outage: Mutex<OutageLog>,
    /// Whether `outage` holds one (read without the lock on each success).
    in_outage: AtomicBool,
    /// Requests that failed and wait to be retried, now.
    waiting: AtomicUsize,
}

/// What the log has said of outages.
#[derive(Debug, Default)]
struct OutageLog {
    /// The outage going on: since when, when to report next, whether its
    /// start went to the debug log only.
    current: Option<Outage>,
    /// When an outage was last announced at warn level.
    announced: Option<tokio::time::Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Outage {
    since: tokio::time::Instant,
    next_report: tokio::time::Instant,
    quiet: bool,
}

/// Counts a request among those waiting for the store while it lives (in
/// the log's count and in the counters' [`StoreHealth`](s3block_core::StoreHealth)).
struct Waiting<'a>(&'a AtomicUsize, &'a RequestCounters);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize, counters: &'a RequestCounters) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        counters.note_waiting(true);
        Waiting(count, counters)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.note_waiting(false);
    }
}

/// `d` for the log, to the second: `42s`, `3m05s`, `2h07m`.
fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{:.1}s", d.as_secs_f32()),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

impl Policy {
    /// How long retries may go on (`None`: without limit): short until the
    /// store has answered once.
    fn budget(&self) -> Option<Duration> {
        if self.answered.load(Ordering::Relaxed) {
            self.config.max_elapsed
        } else {
            Some(
                self.config
                    .max_elapsed
                    .map_or(self.config.connect_budget, |m| m.min(self.config.connect_budget)),
            )
        }
    }

    /// The endpoint and bucket, for the outage lines.
    fn place(&self) -> String {
        match &self.target {
            Some(t) => format!("{} (bucket {:?})", t.endpoint, t.bucket),
            None => "the object store".to_owned(),
        }
    }

    /// A request failed `retry` times in a row, the first at `started`, and
    /// will be retried: past [`UNREACHABLE_AFTER`], the store is taken to be
    /// unreachable. The first such failure of an outage says so at warn
    /// level (at debug when an outage was announced less than a minute ago,
    /// so a store that comes and goes does not flood the log); then, once a
    /// minute, how long it has been and how many requests wait.
    fn failing(&self, retry: u32, started: tokio::time::Instant, err: &object_store::Error) {
        if retry < UNREACHABLE_AFTER || !self.answered.load(Ordering::Relaxed) {
            return;
        }
        let now = tokio::time::Instant::now();
        let mut guard = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        let log = &mut *guard;
        match log.current.as_mut() {
            None => {
                let quiet = log.announced.is_some_and(|at| now.duration_since(at) < REPORT_EVERY);
                log.current = Some(Outage { since: started, next_report: started + REPORT_EVERY, quiet });
                self.in_outage.store(true, Ordering::Relaxed);
                self.counters.set_unreachable_since(
                    std::time::SystemTime::now().checked_sub(now.duration_since(started)),
                );
                let limit = match self.config.max_elapsed {
                    None => {
                        "retrying without limit until it answers (--io-timeout gives up instead)".to_owned()
                    }
                    Some(d) => format!("retrying each request for up to {}", span(d)),
                };
                let cause = root_cause(err);
                if quiet {
                    tracing::debug!("the store at {} is unreachable again: {cause}; {limit}", self.place());
                } else {
                    log.announced = Some(now);
                    tracing::warn!("the store at {} is unreachable: {cause}; {limit}", self.place());
                }
            }
            Some(outage) if now >= outage.next_report => {
                while outage.next_report <= now {
                    outage.next_report += REPORT_EVERY;
                }
                outage.quiet = false;
                let since = outage.since;
                log.announced = Some(now);
                tracing::warn!(
                    "the store at {} has been unreachable for {}; {} request(s) waiting, retrying",
                    self.place(),
                    span(now.duration_since(since)),
                    self.waiting.load(Ordering::Relaxed)
                );
            }
            Some(_) => {}
        }
    }

    /// The store answered: an outage going on is over (said in one line).
    fn recovered(&self) {
        if !self.in_outage.swap(false, Ordering::Relaxed) {
            return;
        }
        self.counters.set_unreachable_since(None);
        let mut log = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(outage) = log.current.take() {
            let took = span(outage.since.elapsed());
            if outage.quiet {
                tracing::debug!("the store at {} answers again, after {took}", self.place());
            } else {
                tracing::warn!("the store at {} answers again, after {took} unreachable", self.place());
            }
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
                        self.budget().unwrap_or(self.config.connect_budget)
                    );
                }
            }
            _ => {
                self.answered.store(true, Ordering::Relaxed);
                self.recovered();
            }
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
            StoreErrorKind::Transient => format!(
                "{} (bucket {:?}) did not answer: {}; gave up after {}",
                t.endpoint,
                t.bucket,
                root_cause(&err),
                span(started.elapsed())
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
    /// within the budget of the moment (short until the store answered),
    /// the last wait cut to end when the budget does.
    fn next_wait(&self, retries: &mut Retries) -> Option<Duration> {
        let left = match self.budget() {
            Some(budget) => budget.saturating_sub(retries.elapsed()),
            None => return retries.next_delay(),
        };
        if left.is_zero() {
            return None;
        }
        retries.next_delay().map(|wait| wait.min(left))
    }

    async fn run<R, F, Fut>(&self, method: RequestMethod, what: &str, mut op: F) -> Result<R>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        let mut retries = self.start();
        let mut waiting = None;
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
                        waiting.get_or_insert_with(|| Waiting::new(&self.waiting, &self.counters));
                        // Each retry at debug level; an outage once, then once a minute.
                        tracing::debug!("{what}: {e}; retry {retry} in {wait:?}");
                        self.failing(retry, retries.started(), &e);
                        self.counters.add_retry(method);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    if !matches!(kind, StoreErrorKind::NotFound | StoreErrorKind::AlreadyExists) {
                        self.counters.add_error(method);
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
/// Requests ride out outages of up to `max_elapsed` (a minute by default,
/// for one-shot commands); a mounted volume retries without limit
/// ([`RetryConfig::unlimited`], the frontends' default, as NFS's "hard"
/// mounts do: an outage delays I/O, never fails it), or for its
/// `--io-timeout` ([`RetryConfig::io_timeout`]). But until the store has
/// answered once, an error is far more likely a mistyped endpoint or a
/// server that is not running, and a user starting a mount should not wait
/// to learn that. So until the first answer (any answer that is not a
/// transient failure), retries stop after `connect_budget` (10 s by
/// default), whatever the other limits; the first failure is logged once as
/// "cannot reach ENDPOINT: CAUSE; retrying for up to 10s".
///
/// # Outages in the log
///
/// Single retries are logged at debug level only. Once a request has failed
/// three times in a row (and the store had answered before), the store is
/// taken to be unreachable and one warning says so, with the endpoint, the
/// bucket, the cause and the limit ("the store at URL (bucket "b") is
/// unreachable: CAUSE; retrying without limit until it answers"). Then,
/// once a minute while it lasts, one line says how long it has been and
/// how many requests wait; the first request to get an answer again says
/// the store "answers again, after 3m04s unreachable". An outage starting
/// less than a minute after the last one was announced goes to the debug
/// log (unless it lasts a minute), so a store that comes and goes does not
/// flood the log.
///
/// When the store knows its endpoint and bucket ([`RetryStore::with_target`],
/// set for S3 by [`StoreConfig`](crate::StoreConfig)), the errors a user can
/// fix come out naming them: an unreachable endpoint, a bucket that does not
/// exist (S3 `NoSuchBucket`, which `object_store` reports as "not found",
/// like a missing object), and refused credentials.
///
/// GET bodies are read inside the loop (objects are blocks, a few MiB at
/// most), so a connection reset in the middle of a body is retried too.
/// A body is copied, chunk by chunk as it arrives, into a buffer that goes
/// back to the store when the last user of the block drops it, for the next
/// body of that size (at most 2 MiB of idle buffers are kept; the buffers of
/// small blocks are made in batches: [`BufferPool::for_blocks`]). Fetched
/// blocks then cost no fresh memory, and the HTTP client, whose chunks are
/// dropped once copied, reads into its same buffer again.
/// A bulk delete is retried per batch of 1000 keys; keys already gone count as
/// deleted. A listing that fails midway resumes after the last key seen
/// (listing is ordered on S3).
#[derive(Debug)]
pub struct RetryStore<T> {
    inner: Arc<T>,
    policy: Arc<Policy>,
    bodies: Arc<BufferPool>,
    whole_bodies_kept: bool,
}

impl<T: ObjectStore> RetryStore<T> {
    /// Wraps `inner`; retries are counted into `counters`.
    pub fn new(inner: T, config: RetryConfig, counters: Arc<RequestCounters>) -> Self {
        let schedule = config.waits();
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
                outage: Mutex::new(OutageLog::default()),
                in_outage: AtomicBool::new(false),
                waiting: AtomicUsize::new(0),
            }),
            bodies: BufferPool::for_blocks(BufferPool::DEFAULT_LIMIT),
            whole_bodies_kept: false,
        }
    }

    /// Keeps a GET body that comes in one chunk holding the whole object as
    /// it came, instead of copying it into a buffer of its own. Only for a
    /// store whose bodies are the objects it holds (the memory store, set
    /// by [`StoreConfig`](crate::StoreConfig)): such a chunk holds exactly
    /// the object's bytes, where a chunk from an HTTP client is a slice of
    /// its read buffer that a cached block would keep alive. A part of an
    /// object is copied all the same, so it never keeps the rest alive.
    pub fn keeping_whole_bodies(mut self) -> Self {
        self.whole_bodies_kept = true;
        self
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
        self.policy
            .run(RequestMethod::Put, "PUT", || self.inner.put_opts(location, payload.clone(), opts.clone()))
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.policy
            .run(RequestMethod::Put, "multipart PUT", || {
                self.inner.put_multipart_opts(location, opts.clone())
            })
            .await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.policy
            .run(RequestMethod::Get, "GET", || async {
                let GetResult { payload, meta, range, attributes, extensions } =
                    self.inner.get_opts(location, options.clone()).await?;
                let payload = match payload {
                    GetResultPayload::Stream(s) => {
                        let of = match (range.start == 0 && range.end == meta.size, self.whole_bodies_kept) {
                            (false, _) => BodyOf::Part,
                            (true, false) => BodyOf::Object,
                            (true, true) => BodyOf::KeptObject,
                        };
                        let body = self.bodies.read(range.end.saturating_sub(range.start), of, s).await?;
                        GetResultPayload::Stream(futures::stream::once(async move { Ok(body) }).boxed())
                    }
                    file => file,
                };
                Ok(GetResult { payload, meta, range, attributes, extensions })
            })
            .await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.policy.run(RequestMethod::Get, "GET ranges", || self.inner.get_ranges(location, ranges)).await
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
                        .run(RequestMethod::Delete, "bulk DELETE", || {
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
        self.policy.run(RequestMethod::List, "LIST", || self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.policy.run(RequestMethod::Put, "COPY", || self.inner.copy_opts(from, to, options.clone())).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.policy
            .run(RequestMethod::Put, "RENAME", || self.inner.rename_opts(from, to, options.clone()))
            .await
    }
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
                        st.policy.failing(st.retries.retries(), st.retries.started(), &e);
                        st.policy.counters.add_retry(RequestMethod::List);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    st.policy.counters.add_error(RequestMethod::List);
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
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{FaultConfig, FaultStore};
    use object_store::memory::InMemory;
    use tokio::time::Instant;

    /// The warnings logged, with when (tokio's clock) and what they said.
    #[derive(Clone, Default)]
    struct Warnings(Arc<Mutex<Vec<(Instant, String)>>>);

    struct Message(String);

    impl tracing::field::Visit for Message {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl tracing::Subscriber for Warnings {
        fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
            *m.level() <= tracing::Level::WARN
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, e: &tracing::Event<'_>) {
            let mut m = Message(String::new());
            e.record(&mut m);
            self.0.lock().unwrap().push((Instant::now(), m.0));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    type Faulty = Arc<FaultStore<InMemory>>;

    /// A store that has answered once and now fails every request, behind
    /// a retry layer of `config`; and the warnings it logs.
    async fn outage(config: RetryConfig) -> (Arc<RetryStore<Faulty>>, Faulty, Warnings) {
        outage_counted(config, Arc::default()).await
    }

    async fn outage_counted(
        config: RetryConfig,
        counters: Arc<RequestCounters>,
    ) -> (Arc<RetryStore<Faulty>>, Faulty, Warnings) {
        let faulty = Arc::new(FaultStore::new(InMemory::new(), FaultConfig::errors(1.0), 5));
        let store =
            RetryStore::new(faulty.clone(), config.seed(5), counters).with_target("http://127.0.0.1:9", "b");
        faulty.set_enabled(false);
        store.put_opts(&Path::from("v/0"), "x".into(), PutOptions::default()).await.unwrap();
        faulty.set_enabled(true);
        (Arc::new(store), faulty, Warnings::default())
    }

    /// The memory store's bodies are kept as they come when whole (the
    /// chunk is the stored object), and copied when a part: a cached part
    /// must not keep the whole object alive. Without the setting, a whole
    /// body is copied too.
    #[tokio::test]
    async fn whole_bodies_of_a_memory_store_are_kept_and_parts_copied() {
        use object_store::ObjectStoreExt;
        let stored = Bytes::from(vec![7u8; 1 << 20]);
        let path = Path::from("v/0");
        for keep in [true, false] {
            let mut store = RetryStore::new(InMemory::new(), RetryConfig::default(), Arc::default());
            if keep {
                store = store.keeping_whole_bodies();
            }
            store.put_opts(&path, stored.clone().into(), PutOptions::default()).await.unwrap();
            let whole = store.get(&path).await.unwrap().bytes().await.unwrap();
            assert_eq!(whole, stored);
            assert_eq!(whole.as_ptr() == stored.as_ptr(), keep, "whole body kept: {keep}");
            let part = store.get_range(&path, 4096..8192).await.unwrap();
            assert_eq!(&part[..], &stored[4096..8192]);
            assert_ne!(part.as_ptr(), stored[4096..].as_ptr(), "a part is copied (keep: {keep})");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_of_an_hour_delays_requests_and_is_logged_once_a_minute() {
        let counters = Arc::new(RequestCounters::default());
        let (store, faulty, warnings) =
            outage_counted(RetryConfig::default().io_timeout(None), counters.clone()).await;
        let _log = tracing::subscriber::set_default(warnings.clone());
        let start = Instant::now();
        let wall = std::time::SystemTime::now();
        let requests: Vec<_> = (0..3)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let got = store.get_opts(&Path::from("v/0"), GetOptions::default()).await;
                    let key = Path::from(format!("v/{i}"));
                    let put = store.put_opts(&key, "y".into(), PutOptions::default()).await;
                    (got.map(|_| ()), put.map(|_| ()), Instant::now())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        for r in &requests {
            assert!(!r.is_finished(), "a request ended during the outage");
        }
        // The outage shows in the counters' health: since about when it
        // began (paused time does not move the wall clock), 3 waiting.
        let health = counters.health();
        assert_eq!(health.waiting, 3, "{health:?}");
        let since = health.unreachable_since.expect("the outage shows in the health");
        assert!(since <= wall + Duration::from_secs(1), "{since:?} {wall:?}");
        faulty.set_enabled(false);
        for r in requests {
            let (got, put, at) = r.await.unwrap();
            got.unwrap();
            put.unwrap();
            // The first retry after the end, at most one wait later.
            assert!(at - start <= Duration::from_secs(3610), "done after {:?}", at - start);
        }
        let lines = warnings.0.lock().unwrap().clone();
        let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        assert!(
            text[0].contains("the store at http://127.0.0.1:9 (bucket \"b\") is unreachable: ")
                && text[0].contains("injected fault")
                && text[0].contains("retrying without limit"),
            "{text:#?}"
        );
        assert!(lines[0].0 - start < Duration::from_secs(15), "announced after {:?}", lines[0].0 - start);
        let reports: Vec<_> = lines.iter().filter(|(_, l)| l.contains("has been unreachable for")).collect();
        assert!((59..=60).contains(&reports.len()), "{} reports: {text:#?}", reports.len());
        for (n, (at, line)) in reports.iter().enumerate() {
            let due = Duration::from_secs(60 * (n as u64 + 1));
            let late = (*at - start).checked_sub(due);
            assert!(
                late.is_some_and(|l| l <= Duration::from_secs(10)),
                "report {n} at {:?}: {line}",
                *at - start
            );
        }
        assert!(
            reports[1].1.contains("for 2m0") && reports[1].1.contains("3 request(s) waiting"),
            "{}",
            reports[1].1
        );
        let last = text.last().unwrap();
        assert!(last.contains("answers again, after 1h00m unreachable"), "{last}");
        assert_eq!(counters.health(), s3block_core::StoreHealth::default(), "the outage is over");
        assert_eq!(lines.len(), reports.len() + 2, "no other warnings: {text:#?}");
    }

    #[tokio::test(start_paused = true)]
    async fn with_an_io_timeout_a_request_fails_once_it_has_passed() {
        for secs in [5, 30] {
            let (store, _, warnings) =
                outage(RetryConfig::default().io_timeout(Some(Duration::from_secs(secs)))).await;
            let _log = tracing::subscriber::set_default(warnings.clone());
            let start = Instant::now();
            let err =
                store.get_opts(&Path::from("v/0"), GetOptions::default()).await.expect_err("it gives up");
            assert_eq!(start.elapsed(), Duration::from_secs(secs), "gives up when the timeout has passed");
            assert_eq!(classify(&err), StoreErrorKind::Transient);
            let msg = err.to_string();
            assert!(
                msg.contains("http://127.0.0.1:9") && msg.contains(&format!("gave up after {secs}.0s")),
                "{msg}"
            );
            let lines = warnings.0.lock().unwrap().clone();
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(lines[0].1.contains(&format!("retrying each request for up to {secs}.0s")), "{lines:?}");
        }
    }

    #[test]
    fn spans_for_the_log() {
        assert_eq!(span(Duration::from_millis(4200)), "4.2s");
        assert_eq!(span(Duration::from_secs(185)), "3m05s");
        assert_eq!(span(Duration::from_secs(7620)), "2h07m");
    }

    #[test]
    fn default_budgets_and_the_setters() {
        let c = RetryConfig::default();
        assert_eq!(c.connect_budget, Duration::from_secs(10));
        assert_eq!((c.max_elapsed, c.max_attempts), (Some(Duration::from_secs(60)), Some(20)));
        assert!(!c.is_unlimited());
        let hard = c.clone().io_timeout(None);
        assert!(hard.is_unlimited() && hard.connect_budget == c.connect_budget);
        assert!(c.clone().io_timeout(Some(Duration::ZERO)).is_unlimited());
        let soft = c.clone().io_timeout(Some(Duration::from_secs(5)));
        assert_eq!((soft.max_elapsed, soft.max_attempts), (Some(Duration::from_secs(5)), None));
        let c = c.max_attempts(3).seed(7).connect_budget(Duration::from_secs(2));
        assert_eq!((c.max_attempts, c.seed, c.connect_budget), (Some(3), Some(7), Duration::from_secs(2)));
    }
}
