//! The block cache against a reference model, over the real store stack:
//! `BlockCache<ObjectBlockDevice>` on `RetryStore<FaultStore<..>>`, the
//! fault store failing 10% of requests (server errors and timeouts) with
//! latency spikes. The retry layer gives up after two attempts here, so some
//! failures reach the cache and its own retrying of uploads is exercised too.
//!
//! Three tasks run random reads, writes (whole block, partial, zeros),
//! discards, zeroed ranges and flushes at once, each on its own run of
//! blocks so its part of the model is exact. After a flush succeeds, the
//! objects, read by a new device without the cache and without faults, must
//! equal the model: nothing written is lost. Runs over memory (many cases)
//! and over Garage (a few). The model driver is the cache's own
//! (`s3block-cache/tests/common/model.rs`), included by path.

#[path = "../../s3block-cache/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::assert_device_equals;
use common::model::{cases, config, plan, run_model, run_model_with_disk, runtime, volume};
use object_store::ObjectStore;
use object_store::memory::InMemory;
use proptest::prelude::*;
use s3block_cache::Durability;
use s3block_core::{KeyLayout, RequestCounters};
use s3block_store::{FaultConfig, FaultStore, ObjectBlockDevice, RetryConfig, RetryStore, StoreConfig};
use s3block_testkit::{s3_env, unique_prefix};

/// The device stack of a mount over `store`, with faults injected between
/// the store and the retry layer.
fn faulty_device(store: Arc<dyn ObjectStore>, prefix: &str, seed: u64) -> ObjectBlockDevice {
    let faults = FaultConfig {
        latency: Duration::from_micros(100),
        spike_rate: 0.02,
        spike: Duration::from_millis(5),
        ..FaultConfig::errors(0.10)
    };
    let retry = RetryConfig::default()
        .initial_backoff(Duration::from_millis(1))
        .max_backoff(Duration::from_millis(4))
        .max_attempts(2)
        .seed(seed);
    let counters = Arc::new(RequestCounters::default());
    let stack = RetryStore::new(FaultStore::new(store, faults, seed), retry, counters.clone());
    ObjectBlockDevice::new(Arc::new(stack), KeyLayout::new(prefix, false), volume()).with_counters(counters)
}

/// Runs the plan over the faulty stack on `store`, then reopens the volume
/// without the cache and without faults and compares it with the model.
async fn check_model(
    store: Arc<dyn ObjectStore>,
    prefix: &str,
    plan: Vec<Vec<common::model::Op>>,
    seed: u64,
) {
    let model = run_model(faulty_device(store.clone(), prefix, seed), plan, config(1), true).await;
    let plain = ObjectBlockDevice::new(store, KeyLayout::new(prefix, false), volume());
    assert_device_equals(&plain, &model).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), ..ProptestConfig::default() })]

    #[test]
    fn cache_over_the_faulty_store_stack_loses_nothing(plan in plan(40), seed in any::<u64>()) {
        runtime().block_on(check_model(Arc::new(InMemory::new()), "vol/", plan, seed));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(8), ..ProptestConfig::default() })]

    /// The same with the disk tier between the RAM cache and the faulty
    /// stack, crashing twice (RAM and tier dropped, the directory kept).
    #[test]
    fn cache_and_disk_tier_over_the_faulty_store_stack_survive_crashes(
        plan in plan(30),
        seed in any::<u64>(),
        local in any::<bool>(),
    ) {
        runtime().block_on(async {
            let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let dir = common::disk::TempDir::new("stack-model");
            let device = Arc::new(faulty_device(store.clone(), "vol/", seed));
            let durability = if local { Durability::Local } else { Durability::Remote };
            let model = run_model_with_disk(device, plan, config(1), dir.path(), durability, 3, true).await;
            let plain = ObjectBlockDevice::new(store, KeyLayout::new("vol/", false), volume());
            assert_device_equals(&plain, &model).await;
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(3), ..ProptestConfig::default() })]

    #[test]
    fn cache_over_faulty_garage_loses_nothing(plan in plan(25), seed in any::<u64>()) {
        let Some(env) = s3_env() else { return Ok(()) };
        let opened = StoreConfig::new(format!("s3://{}", env.bucket))
            .endpoint(&env.endpoint)
            .region(&env.region)
            .access_key_id(&env.access_key_id)
            .secret_access_key(&env.secret_access_key)
            .open()
            .expect("the Garage store opens");
        let prefix = unique_prefix("cache_model");
        runtime().block_on(check_model(opened.store, &prefix, plan, seed));
    }
}
