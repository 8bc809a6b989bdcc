//! The retry budget: short until the store has answered once (a wrong
//! endpoint fails a start in seconds), long afterwards (block I/O rides out
//! an outage), and the final error naming the endpoint and bucket.

use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, PutOptions};
use s3block_core::{RequestCounters, StoreErrorKind};
use s3block_store::{FaultConfig, FaultStore, RetryConfig, RetryStore, classify, store_error};

type Faulty = Arc<FaultStore<InMemory>>;

fn stack(seed: u64) -> (Arc<RetryStore<Faulty>>, Faulty) {
    let faulty = Arc::new(FaultStore::new(InMemory::new(), FaultConfig::errors(1.0), seed));
    let config = RetryConfig::default().seed(seed);
    let retry = RetryStore::new(faulty.clone(), config, Arc::new(RequestCounters::default()))
        .with_target("http://127.0.0.1:9", "the-bucket");
    (Arc::new(retry), faulty)
}

#[tokio::test(start_paused = true)]
async fn a_store_that_never_answered_gives_up_within_the_connect_budget() {
    for seed in 0..5 {
        let (store, faulty) = stack(seed);
        let started = tokio::time::Instant::now();
        let err = store.get_opts(&Path::from("vol/x"), GetOptions::default()).await.expect_err("all fail");
        let took = started.elapsed();
        assert!(took <= Duration::from_secs(10), "seed {seed}: gave up after {took:?}");
        assert!(faulty.injected() > 1, "seed {seed}: no retry at all");
        assert_eq!(classify(&err), StoreErrorKind::Transient);
        let msg = store_error(err, "vol/s3block-volume.json", None).to_string();
        assert!(
            msg.contains("cannot reach http://127.0.0.1:9")
                && msg.contains("\"the-bucket\"")
                && msg.contains("injected fault")
                && msg.contains("vol/s3block-volume.json"),
            "{msg}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn after_the_first_answer_block_io_gets_the_long_budget() {
    let (store, faulty) = stack(3);
    faulty.set_enabled(false);
    store.put_opts(&Path::from("vol/00000000"), "x".into(), PutOptions::default()).await.expect("put");
    faulty.set_enabled(true);
    let started = tokio::time::Instant::now();
    let err = store.get_opts(&Path::from("vol/00000000"), GetOptions::default()).await.expect_err("all fail");
    let took = started.elapsed();
    assert!(took > Duration::from_secs(10) && took <= Duration::from_secs(60), "gave up after {took:?}");
    let msg = store_error(err, "vol/00000000", None).to_string();
    assert!(!msg.contains("cannot reach"), "the store had answered: {msg}");
}

/// A store failing every request behind a retry layer of `config`, and the
/// counters the retries are counted in.
fn failing(config: RetryConfig) -> (RetryStore<Faulty>, Faulty, Arc<RequestCounters>) {
    let faulty = Arc::new(FaultStore::new(InMemory::new(), FaultConfig::errors(1.0), 1));
    let counters = Arc::new(RequestCounters::default());
    (RetryStore::new(faulty.clone(), config, counters.clone()), faulty, counters)
}

#[tokio::test(start_paused = true)]
async fn the_attempt_budget_is_exact_and_the_waits_within_their_ceilings() {
    for seed in 0..5 {
        let config = RetryConfig::default()
            .initial_backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(250))
            .max_attempts(4)
            .seed(seed);
        let (store, faulty, counters) = failing(config);
        let started = tokio::time::Instant::now();
        store.get_opts(&Path::from("vol/x"), GetOptions::default()).await.expect_err("all fail");
        let took = started.elapsed();
        assert_eq!(faulty.injected(), 4, "seed {seed}: four attempts, the first included");
        let counts = counters.snapshot();
        assert_eq!(counts.retries, 3, "seed {seed}");
        // By method too: the GET was retried three times, then failed.
        assert_eq!((counts.retries_by_method.get, counts.errors_by_method.get), (3, 1), "seed {seed}");
        assert_eq!(counts.retries_by_method.put + counts.errors_by_method.put, 0, "seed {seed}");
        // Three waits, of at most 100, 200 and 250 ms (the cap).
        assert!(took <= Duration::from_millis(550), "seed {seed}: {took:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_seed_replays_the_same_waits() {
    let run = |seed: u64| async move {
        let config = RetryConfig::default().max_attempts(6).seed(seed);
        let (store, _, _) = failing(config);
        let started = tokio::time::Instant::now();
        store.get_opts(&Path::from("vol/x"), GetOptions::default()).await.expect_err("all fail");
        started.elapsed()
    };
    let first = run(11).await;
    assert_eq!(run(11).await, first, "the same seed waits exactly as long");
    assert!(first > Duration::ZERO);
    let others = [run(12).await, run(13).await, run(14).await];
    assert!(others.iter().any(|t| *t != first), "other seeds draw other waits: {first:?} {others:?}");
}
