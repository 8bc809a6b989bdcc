//! The conformance suite against memory and a local directory.

use std::collections::HashMap;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use s3block_store::conformance as c;
use s3block_store::{ListPlan, StoreConfig, StoreKind};

fn memory() -> (Arc<dyn ObjectStore>, ListPlan) {
    let opened = StoreConfig::new("memory://").env(HashMap::new()).open().expect("memory store");
    assert_eq!(opened.kind, StoreKind::Memory);
    (opened.store, opened.list_plan)
}

fn local(dir: &tempfile::TempDir) -> (Arc<dyn ObjectStore>, ListPlan) {
    let url = format!("file://{}", dir.path().display());
    let opened = StoreConfig::new(url).env(HashMap::new()).open().expect("local store");
    (opened.store, opened.list_plan)
}

async fn suite(store: Arc<dyn ObjectStore>, plan: ListPlan) {
    c::round_trips(store.clone(), "rt/").await;
    c::zero_elision(store.clone(), "zero/").await;
    c::compression(store.clone(), "z/").await;
    c::block0_metadata(store.clone(), "b0/").await;
    c::geometry_detection(store.clone(), "geo/").await;
    c::mount_lock(store.clone(), "lock/", None).await;
    c::simultaneous_mounts(store.clone(), "race/", None).await;
    c::stale_lock_takeover(store.clone(), "stale/", None).await;
    c::listing_and_bulk_delete(store.clone(), "list/", plan).await;
    c::corrupt_objects(store.clone(), "bad/").await;
    c::retries_under_faults(store.clone(), "faults/").await;
    c::encryption(store.clone(), "crypt/").await;
}

#[tokio::test]
async fn memory_store_conforms() {
    let (store, plan) = memory();
    suite(store.clone(), plan).await;
    // The way a store that ignores conditional creates is locked (a local
    // directory's sidecars are not written for two writers of one object).
    c::simultaneous_mounts(store.clone(), "race-advisory/", Some(false)).await;
    c::stale_lock_takeover(store, "stale-advisory/", Some(false)).await;
}

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, plan) = local(&dir);
    suite(store, plan).await;
}

#[tokio::test]
async fn parallel_listing_splits_ranges() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    c::listing_and_bulk_delete(store.clone(), "p1/", ListPlan { parallelism: 1, sorted: true }).await;
    c::listing_and_bulk_delete(store.clone(), "p7/", ListPlan { parallelism: 7, sorted: true }).await;
    c::listing_and_bulk_delete(store, "unsorted/", ListPlan { parallelism: 4, sorted: false }).await;
}
