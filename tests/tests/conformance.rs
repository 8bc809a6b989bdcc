//! The store conformance suite (`s3block_store::conformance`) against the
//! Garage test server, through the store the product builds:
//! `StoreConfig::open()` for `s3://bucket`, with its retries, request
//! counting and list plan. The memory and local-directory runs of the same
//! checks are in the store crate's tests.
//!
//! Garage 2.5 ignores `If-None-Match`, so the mount lock taken through the
//! probe must come out advisory here.

use std::collections::HashMap;
use std::sync::Arc;

use object_store::ObjectStore;
use s3block_store::conformance as c;
use s3block_store::{
    ListPlan, LockMode, LockOptions, MountLock, OpenedStore, StoreConfig, StoreKind, probe_conditional_put,
};
use s3block_testkit::{S3Env, s3_env, unique_prefix};

/// The Garage bucket opened the way the mount program and the CLI open it.
fn open(env: &S3Env) -> OpenedStore {
    let vars: HashMap<String, String> = [
        ("AWS_ACCESS_KEY_ID", env.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", env.secret_access_key.as_str()),
        ("AWS_REGION", env.region.as_str()),
        ("AWS_ENDPOINT_URL", env.endpoint.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let opened =
        StoreConfig::new(format!("s3://{}", env.bucket)).env(vars).open().expect("the Garage store opens");
    assert_eq!(opened.kind, StoreKind::S3 { bucket: env.bucket.clone() });
    assert_eq!(opened.prefix, "", "no prefix in the URL");
    opened
}

fn garage(test: &str) -> Option<(Arc<dyn ObjectStore>, String, ListPlan)> {
    let env = s3_env()?;
    let opened = open(&env);
    Some((opened.store, unique_prefix(test), opened.list_plan))
}

#[tokio::test]
async fn round_trips() {
    let Some((store, prefix, _)) = garage("conf_round_trips") else { return };
    c::round_trips(store, &prefix).await;
}

#[tokio::test]
async fn zero_elision() {
    let Some((store, prefix, _)) = garage("conf_zero_elision") else { return };
    c::zero_elision(store, &prefix).await;
}

#[tokio::test]
async fn compression() {
    let Some((store, prefix, _)) = garage("conf_compression") else { return };
    c::compression(store, &prefix).await;
}

#[tokio::test]
async fn block0_metadata() {
    let Some((store, prefix, _)) = garage("conf_block0") else { return };
    c::block0_metadata(store, &prefix).await;
}

#[tokio::test]
async fn geometry_detection() {
    let Some((store, prefix, _)) = garage("conf_geometry") else { return };
    c::geometry_detection(store, &prefix).await;
}

#[tokio::test]
async fn mount_lock_is_advisory_on_garage() {
    let Some((store, prefix, _)) = garage("conf_lock") else { return };
    assert!(
        !probe_conditional_put(store.as_ref(), &prefix).await.expect("probe"),
        "Garage enforced If-None-Match: the lock can be strict there now"
    );
    let lock = MountLock::acquire(store.clone(), &prefix, LockOptions::default()).await.expect("lock");
    assert_eq!(lock.mode(), LockMode::Advisory);
    assert!(lock.release().await.expect("release"));
    // The suite's own checks, probing each time as a mount does.
    c::mount_lock(store, &prefix, None).await;
}

/// Garage ignores conditional creates: ten pairs of mounts (and of creates)
/// started at the same moment, and exactly one of each pair wins.
#[tokio::test]
async fn simultaneous_mounts_on_garage() {
    let Some((store, prefix, _)) = garage("conf_race") else { return };
    c::simultaneous_mounts(store, &prefix, None).await;
}

/// Stale locks of this host taken over on Garage, where the lock is
/// advisory: written over, then read back after the settle time.
#[tokio::test]
async fn stale_lock_takeover_on_garage() {
    let Some((store, prefix, _)) = garage("conf_stale_lock") else { return };
    c::stale_lock_takeover(store, &prefix, None).await;
}

#[tokio::test]
async fn listing_and_bulk_delete() {
    let Some((store, prefix, plan)) = garage("conf_listing") else { return };
    assert!(plan.sorted && plan.parallelism > 1, "S3 lists in parallel sorted ranges: {plan:?}");
    c::listing_and_bulk_delete(store, &prefix, plan).await;
}

#[tokio::test]
async fn corrupt_objects() {
    let Some((store, prefix, _)) = garage("conf_corrupt") else { return };
    c::corrupt_objects(store, &prefix).await;
}

/// `FaultStore` over the opened Garage store: injected errors are retried.
#[tokio::test]
async fn retries_under_faults() {
    let Some((store, prefix, _)) = garage("conf_faults") else { return };
    c::retries_under_faults(store, &prefix).await;
}

#[tokio::test]
async fn encryption() {
    let Some((store, prefix, _)) = garage("conf_encryption") else { return };
    c::encryption(store, &prefix).await;
}

/// Every check of the suite runs against every store: here on Garage, and
/// in the store crate's tests on memory and a local directory.
#[test]
fn every_check_runs_against_every_store() {
    let suite = include_str!("../../s3block-store/src/conformance.rs");
    let checks: Vec<&str> = suite
        .lines()
        .filter_map(|l| l.strip_prefix("pub async fn "))
        .filter(|l| l.contains("(store: Arc<dyn ObjectStore>"))
        .filter_map(|l| l.split('(').next())
        .collect();
    assert!(checks.len() >= 10, "found only {checks:?}");
    let garage = include_str!("conformance.rs");
    let local = include_str!("../../s3block-store/tests/conformance.rs");
    let suite_fn = local.split("async fn suite(").nth(1).expect("the store crate's suite()");
    for check in checks {
        assert!(garage.contains(&format!("c::{check}(")), "{check} does not run against Garage");
        assert!(
            suite_fn.contains(&format!("c::{check}(")),
            "{check} is not in the suite() the memory and local-directory stores run"
        );
    }
}
