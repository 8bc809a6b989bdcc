//! The cache against a reference model: a `Vec<u8>` of the whole volume.
//!
//! Several tasks run random reads, writes (whole block, partial, zeros),
//! discards, zeroed ranges and flushes at once. Each task owns its own run of
//! blocks, so its part of the model is exact and every read is checked as it
//! completes; the tasks still share the cache, its memory, its dirty limit and
//! its uploads. After a final flush, the device below, read without the
//! cache, must equal the model. The same runs over a store that fails 10% of
//! requests and has latency spikes: nothing may be lost once a flush succeeds.
//! The driver is `common::model`, shared with the workspace test over the
//! real store stack.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::assert_device_equals;
use common::model::{cases, config, plan, run_model, run_model_with_disk, runtime, volume};
use proptest::prelude::*;
use s3block_cache::Durability;
use s3block_cache::testing::FlakyDevice;
use s3block_core::MemoryDevice;

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    #[test]
    fn cache_over_memory_matches_the_model(plan in plan(40), delay in prop_oneof![Just(0u64), Just(2)]) {
        runtime().block_on(async {
            let mem = Arc::new(MemoryDevice::new(volume()));
            let model = run_model(Arc::clone(&mem), plan, config(delay), false).await;
            assert_device_equals(&*mem, &model).await;
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), ..ProptestConfig::default() })]

    #[test]
    fn cache_over_a_failing_store_loses_nothing(plan in plan(40), seed in any::<u64>()) {
        runtime().block_on(async {
            let mem = Arc::new(MemoryDevice::new(volume()));
            let flaky = FlakyDevice::new(Arc::clone(&mem), 0.10, seed)
                .with_latency(Duration::from_micros(200), 0.02, Duration::from_millis(3));
            let model = run_model(flaky, plan, config(1), true).await;
            assert_device_equals(&*mem, &model).await;
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), ..ProptestConfig::default() })]

    /// RAM cache over the disk tier over a failing store, with two crashes
    /// that keep only the cache directory: after the final flush and close
    /// the store equals the model.
    #[test]
    fn cache_over_the_disk_tier_survives_crashes(
        plan in plan(40),
        seed in any::<u64>(),
        local in any::<bool>(),
    ) {
        runtime().block_on(async {
            let dir = common::disk::TempDir::new("model");
            let mem = Arc::new(MemoryDevice::new(volume()));
            let flaky = Arc::new(FlakyDevice::new(Arc::clone(&mem), 0.10, seed)
                .with_latency(Duration::from_micros(200), 0.02, Duration::from_millis(3)));
            let durability = if local { Durability::Local } else { Durability::Remote };
            let model = run_model_with_disk(flaky, plan, config(1), dir.path(), durability, 3, true).await;
            assert_device_equals(&*mem, &model).await;
        });
    }
}
