//! s3backer's timing options reach the requests: `--timeout` (s3block's
//! `--request-timeout`) ends an attempt that gets no answer; the retry
//! pauses (`--initialRetryPause`, `--maxRetryPause`) set the first wait
//! and the time after which a failing request gives up.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore};
use s3block_cache::frontend::VolumeArgs;
use s3block_core::RequestCounters;
use s3block_store::{FaultConfig, FaultStore, RetryConfig, RetryStore};

/// The volume options as a frontend parses them.
#[derive(Debug, Parser)]
struct Frontend {
    #[command(flatten)]
    volume: VolumeArgs,
}

fn parse(args: &[&str]) -> VolumeArgs {
    let v = Frontend::try_parse_from(std::iter::once("prog").chain(args.iter().copied())).unwrap().volume;
    v.check().unwrap();
    v
}

#[tokio::test]
async fn an_attempt_without_an_answer_ends_at_the_request_timeout() {
    // A server that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let v = parse(&["--timeout=1", &format!("--endpoint={endpoint}"), "s3://bucket"]);
    let keys = [("AWS_ACCESS_KEY_ID", "id"), ("AWS_SECRET_ACCESS_KEY", "secret")];
    let env: HashMap<String, String> = keys.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let opened = v.store_args.to_config(&v.store).retry(RetryConfig::none()).env(env).open().unwrap();
    let start = Instant::now();
    let err = opened.store.get_opts(&Path::from("b/0"), GetOptions::default()).await.unwrap_err();
    let took = start.elapsed();
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&took),
        "one attempt took {took:?}, not about --timeout=1 (the default is 30 s): {err}"
    );
}

/// How many attempts a request makes against a store that always fails,
/// and after how long it gives up (in paused time).
async fn attempts_until_given_up(v: &VolumeArgs) -> (u64, Duration) {
    let faulty = Arc::new(FaultStore::new(InMemory::new(), FaultConfig::errors(1.0), 7));
    let store =
        RetryStore::new(faulty.clone(), v.retry_config().seed(7), Arc::new(RequestCounters::default()));
    // The store has answered once: from now on the retry budget applies.
    faulty.set_enabled(false);
    store.put_opts(&Path::from("v/0"), "x".into(), Default::default()).await.unwrap();
    faulty.set_enabled(true);
    let start = tokio::time::Instant::now();
    store.get_opts(&Path::from("v/0"), GetOptions::default()).await.unwrap_err();
    (faulty.injected(), start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn retry_pauses_set_the_first_wait_and_the_budget() {
    // Waits of at most 1, 2, 4, ... ms: nine of them take at most 511 ms,
    // so a second's budget holds ten attempts at least.
    let quick = parse(&["--initialRetryPause=1", "--maxRetryPause=1000", "memory://"]);
    let (attempts, took) = attempts_until_given_up(&quick).await;
    assert_eq!(took, Duration::from_millis(1000), "gives up when --maxRetryPause has passed");
    assert!(attempts >= 10, "{attempts} attempts with a first wait of at most 1 ms");
    // The default first wait (at most 200 ms, doubling) makes far fewer.
    let usual = parse(&["--maxRetryPause=1000", "memory://"]);
    let (attempts, took) = attempts_until_given_up(&usual).await;
    assert_eq!(took, Duration::from_millis(1000));
    assert!(attempts < 10, "{attempts} attempts with the default first wait");
}
