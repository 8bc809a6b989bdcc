//! What a user sees when a volume cannot be opened for a reason they can
//! fix: a bucket that does not exist, a wrong secret key (both on Garage),
//! and an endpoint nothing listens on. Each fails at open, at once or
//! within the short retry budget of a store that never answered, with a
//! message naming the bucket or endpoint and what to check.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use s3block_core::{Error, StoreErrorKind};
use s3block_store::{OpenedStore, StoreConfig, VolumeOptions, open_volume, read_lock};
use s3block_testkit::{S3Env, s3_env, unique_prefix};

fn open(env: &S3Env, secret: &str, prefix: &str) -> OpenedStore {
    let vars: HashMap<String, String> = [
        ("AWS_ACCESS_KEY_ID", env.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_REGION", env.region.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    StoreConfig::new(format!("s3://{}/{prefix}", env.bucket))
        .endpoint(&env.endpoint)
        .env(vars)
        .open()
        .expect("the store opens (no request yet)")
}

fn store_kind(err: &Error) -> Option<StoreErrorKind> {
    match err {
        Error::Store { kind, .. } => Some(*kind),
        _ => None,
    }
}

#[tokio::test]
async fn a_missing_bucket_fails_at_once_naming_it() {
    let Some(env) = s3_env() else { return };
    let missing = env.with_bucket("s3block-no-such-bucket");
    let opened = open(&missing, &env.secret_access_key, "vol");
    let started = Instant::now();
    let err = open_volume(opened.store.as_ref(), &opened.prefix, &VolumeOptions::default())
        .await
        .expect_err("a volume in a missing bucket");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let msg = err.to_string();
    assert_eq!(store_kind(&err), Some(StoreErrorKind::NotFound), "{msg}");
    assert!(
        msg.contains("bucket \"s3block-no-such-bucket\" does not exist") && msg.contains(&env.endpoint),
        "{msg}"
    );
    assert!(!msg.contains("no volume"), "a missing bucket is not an empty volume: {msg}");
    // A read-only mount looks at the lock first: same answer, not "unlocked".
    let err = read_lock(opened.store.as_ref(), &opened.prefix).await.expect_err("lock in a missing bucket");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn a_wrong_secret_says_to_check_the_credentials() {
    let Some(env) = s3_env() else { return };
    let opened = open(&env, &format!("{}x", env.secret_access_key), &unique_prefix("wrong_secret"));
    let started = Instant::now();
    let err = open_volume(opened.store.as_ref(), &opened.prefix, &VolumeOptions::default())
        .await
        .expect_err("a wrong secret");
    assert!(started.elapsed() < Duration::from_secs(5), "retried a 403: {:?}", started.elapsed());
    let msg = err.to_string();
    assert_eq!(store_kind(&err), Some(StoreErrorKind::Unauthorized), "{msg}");
    assert!(
        msg.contains(&format!("{} refused the credentials for bucket \"{}\"", env.endpoint, env.bucket))
            && msg.contains("AWS_SECRET_ACCESS_KEY"),
        "{msg}"
    );
}

/// No server: the default retry policy gives up after the 10 s budget of a
/// store that never answered, not the minute block I/O gets.
#[tokio::test]
async fn an_unreachable_endpoint_fails_within_the_connect_budget() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        listener.local_addr().expect("its address").port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let vars: HashMap<String, String> =
        [("AWS_ACCESS_KEY_ID", "GKtest"), ("AWS_SECRET_ACCESS_KEY", "secret"), ("AWS_REGION", "garage")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let opened =
        StoreConfig::new("s3://some-bucket/vol").endpoint(&endpoint).env(vars).open().expect("opens");
    let started = Instant::now();
    let err = open_volume(opened.store.as_ref(), &opened.prefix, &VolumeOptions::default())
        .await
        .expect_err("nothing listens there");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(15), "gave up after {took:?}");
    let msg = err.to_string();
    assert_eq!(store_kind(&err), Some(StoreErrorKind::Transient), "{msg}");
    assert!(
        msg.contains(&format!("cannot reach {endpoint} (bucket \"some-bucket\")"))
            && msg.to_lowercase().contains("connection refused"),
        "{msg}"
    );
}
