//! [`Backoff`]: the one schedule every retry loop of s3block waits by.
//!
//! The store retries transient request errors, the cache retries failed
//! uploads, and a mount retries its final flush at exit. All three wait
//! the same way: exponentially growing delays with full jitter (each wait
//! drawn uniformly from zero to the current ceiling, so clients that failed
//! together do not retry together), capped at a maximum, optionally within
//! a budget of attempts and of time. The clock and the sleeps are tokio's,
//! so tests run on paused time, and the jitter comes from a seeded RNG when
//! a test asks for one, so a run replays exactly.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// A backoff schedule: exponential delays with full jitter, between an
/// initial and a maximum ceiling, with optional attempt and time budgets.
///
/// The ceiling of retry `n` (1-based) is `initial * 2^(n-1)`, at most
/// `max`; the wait before it is drawn uniformly from `0..=ceiling`, in
/// whole milliseconds.
/// [`start`](Backoff::start) begins one run of retries, which keeps the
/// count, the start time and the RNG.
///
/// ```
/// use std::time::Duration;
/// use s3block_core::Backoff;
///
/// let schedule = Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
///     .with_max_attempts(4)
///     .with_seed(7);
/// assert_eq!(schedule.ceiling(1), Duration::from_millis(100));
/// assert_eq!(schedule.ceiling(3), Duration::from_millis(400));
/// assert_eq!(schedule.ceiling(9), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    max_attempts: Option<u32>,
    max_elapsed: Option<Duration>,
    seed: Option<u64>,
}

impl Default for Backoff {
    /// One second doubling to a minute, without a budget: the schedule of a
    /// loop that must not give up, such as a mount's final flush.
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
    }
}

impl Backoff {
    /// Ceilings from `initial` doubling up to `max` (at least `initial`),
    /// no budget, jitter seeded from the operating system.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max: max.max(initial), max_attempts: None, max_elapsed: None, seed: None }
    }

    /// At most `attempts` attempts, the first included: `1` allows no retry.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// No retry starts later than `budget` after the run started.
    pub fn with_max_elapsed(mut self, budget: Duration) -> Self {
        self.max_elapsed = Some(budget);
        self
    }

    /// Draws the jitter from an RNG seeded with `seed`, so runs replay.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The ceiling of the first retry.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The largest ceiling.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The attempt budget, the first attempt included.
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The time budget.
    pub fn max_elapsed(&self) -> Option<Duration> {
        self.max_elapsed
    }

    /// The seed of the jitter, when given.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }

    /// The ceiling of retry number `retry` (1-based; 0 counts as 1):
    /// `initial * 2^(retry-1)`, at most [`max`](Backoff::max).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1);
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The wait before retry number `retry`, drawn from `0..=ceiling` with
    /// `rng`, in whole milliseconds (tokio's timer resolution, so a sleep
    /// lasts exactly the wait drawn; a ceiling under a millisecond draws
    /// nanoseconds). For callers that keep the count themselves (one per
    /// cached block); others use [`start`](Backoff::start).
    pub fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(retry);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        if millis == 0 {
            let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
            return Duration::from_nanos(rng.random_range(0..=nanos));
        }
        Duration::from_millis(rng.random_range(0..=millis))
    }

    /// The RNG of the jitter: seeded when [`with_seed`](Backoff::with_seed)
    /// was given, else from the operating system.
    pub fn rng(&self) -> StdRng {
        match self.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        }
    }

    /// Starts a run of retries now (tokio's clock).
    pub fn start(&self) -> Retries {
        Retries { schedule: self.clone(), rng: self.rng(), retries: 0, started: Instant::now() }
    }
}

/// One run of retries by a [`Backoff`] schedule: the retries made so far,
/// when the run started, and the jitter's RNG.
#[derive(Debug)]
pub struct Retries {
    schedule: Backoff,
    rng: StdRng,
    retries: u32,
    started: Instant,
}

impl Retries {
    /// Counts one more retry and returns the wait before it, or `None` when
    /// the attempt budget is spent or the retry would start after the time
    /// budget.
    pub fn next_delay(&mut self) -> Option<Duration> {
        self.next(None)
    }

    /// Like [`next_delay`](Retries::next_delay), with a time budget of
    /// `budget` for this retry when it is tighter than the schedule's (a
    /// budget that changes during the run).
    pub fn next_delay_within(&mut self, budget: Duration) -> Option<Duration> {
        self.next(Some(budget))
    }

    fn next(&mut self, budget: Option<Duration>) -> Option<Duration> {
        let retry = self.retries.saturating_add(1);
        if self.schedule.max_attempts.is_some_and(|max| retry >= max) {
            return None;
        }
        let wait = self.schedule.delay(retry, &mut self.rng);
        let budget = match (self.schedule.max_elapsed, budget) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if budget.is_some_and(|budget| self.started.elapsed() + wait > budget) {
            return None;
        }
        self.retries = retry;
        Some(wait)
    }

    /// Sleeps until the next retry (tokio's clock); `false`, at once, when
    /// the budget is spent.
    pub async fn wait(&mut self) -> bool {
        match self.next_delay() {
            Some(wait) => {
                tokio::time::sleep(wait).await;
                true
            }
            None => false,
        }
    }

    /// Retries granted so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// When the run started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The schedule of the run.
    pub fn schedule(&self) -> &Backoff {
        &self.schedule
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceilings_double_from_the_initial_delay_up_to_the_cap() {
        let b = Backoff::new(100 * MS, 1000 * MS);
        let ceilings: Vec<_> = (1..=6).map(|n| b.ceiling(n)).collect();
        assert_eq!(ceilings, [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]);
        assert_eq!(b.ceiling(0), 100 * MS, "retry 0 counts as the first");
        assert_eq!(b.ceiling(u32::MAX), 1000 * MS, "no overflow far out");
        // A maximum below the initial delay is raised to it.
        assert_eq!(Backoff::new(5 * MS, MS).max(), 5 * MS);
    }

    #[test]
    fn delays_stay_within_their_ceiling_and_use_its_whole_range() {
        let b = Backoff::new(100 * MS, 1000 * MS);
        let mut rng = b.clone().with_seed(1).rng();
        for retry in 1..=8 {
            let ceiling = b.ceiling(retry);
            let draws: Vec<_> = (0..500).map(|_| b.delay(retry, &mut rng)).collect();
            assert!(draws.iter().all(|d| *d <= ceiling), "retry {retry}");
            // Full jitter: both the bottom and the top of the range are drawn.
            assert!(draws.iter().any(|d| *d < ceiling / 10), "retry {retry}: none near zero");
            assert!(draws.iter().any(|d| *d > ceiling * 9 / 10), "retry {retry}: none near the ceiling");
        }
    }

    #[test]
    fn a_seed_replays_the_same_delays() {
        let b = Backoff::new(10 * MS, 10_000 * MS).with_seed(42);
        let run = |b: &Backoff| {
            let mut r = b.start();
            (0..10).map(|_| r.next_delay()).collect::<Vec<_>>()
        };
        let (one, two) = (run(&b), run(&b));
        assert_eq!(one, two);
        assert_ne!(one, run(&b.clone().with_seed(43)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_attempt_budget_counts_the_first_attempt() {
        let mut r = Backoff::new(MS, MS).with_max_attempts(3).with_seed(0).start();
        assert!(r.next_delay().is_some());
        assert!(r.next_delay().is_some());
        assert_eq!(r.next_delay(), None, "three attempts: the first and two retries");
        assert_eq!(r.retries(), 2);
        let mut none = Backoff::new(MS, MS).with_max_attempts(1).start();
        assert_eq!(none.next_delay(), None, "one attempt allows no retry");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_budget_the_run_never_ends() {
        let mut r = Backoff::new(MS, 4 * MS).with_seed(3).start();
        for _ in 0..1000 {
            assert!(r.wait().await);
        }
        assert_eq!(r.retries(), 1000);
        assert!(r.elapsed() <= 4000 * MS, "{:?}", r.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn waits_take_exactly_the_delays_drawn() {
        let b = Backoff::new(100 * MS, 800 * MS).with_seed(9);
        // The same seed draws the same delays: the run's waits are these.
        let mut twin = b.start();
        let expected: Vec<_> = (0..6).map(|_| twin.next_delay().expect("no budget")).collect();
        let mut r = b.start();
        let mut at = Instant::now();
        for (i, want) in expected.into_iter().enumerate() {
            assert!(r.wait().await);
            assert_eq!(Instant::now() - at, want, "wait {i}");
            at = Instant::now();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_starts_after_the_time_budget() {
        for seed in 0..20 {
            let b = Backoff::new(100 * MS, 1000 * MS).with_max_elapsed(5000 * MS).with_seed(seed);
            let mut r = b.start();
            while r.wait().await {
                assert!(r.elapsed() <= 5000 * MS, "seed {seed}: a retry at {:?}", r.elapsed());
            }
            // Giving up takes no time, and comes once the next wait would
            // overrun: at most one ceiling before the budget.
            assert!(r.elapsed() >= 4000 * MS, "seed {seed}: gave up early, at {:?}", r.elapsed());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_tighter_budget_for_one_retry_applies_to_that_retry() {
        let mut r = Backoff::new(1000 * MS, 1000 * MS).with_max_elapsed(60_000 * MS).with_seed(5).start();
        tokio::time::advance(10_000 * MS).await;
        assert_eq!(r.next_delay_within(10_000 * MS), None, "past the tighter budget");
        assert_eq!(r.retries(), 0, "a refused retry is not counted");
        assert!(r.next_delay().is_some(), "the schedule's own budget still allows it");
        assert!(r.next_delay_within(120_000 * MS).is_some(), "a looser one does not extend the schedule's");
        tokio::time::advance(60_000 * MS).await;
        assert_eq!(r.next_delay_within(120_000 * MS), None);
    }
}
