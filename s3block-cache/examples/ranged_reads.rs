//! Random 4 KiB reads, one at a time (as fio's psync engine at queue depth
//! 1), over a cold volume of 1 MiB blocks: read operations a second and the
//! bytes downloaded per read, with ranged reads off and on. Two passes per
//! mode, each with a fresh (cold) cache: `cold` reads one random page of
//! every block, in random order (every read a first miss); `random` makes
//! READS reads of random pages anywhere (some hit, some are second misses).
//! See docs/BENCHMARKS.md ("Ranged reads").
//!
//! ```text
//! cargo run --release -p s3block-cache --example ranged_reads -- file:///tmp/ranged-vol [READS]
//! ```
//!
//! The store URL takes the usual environment (`AWS_*` for `s3://`). The
//! first run writes 256 blocks of 1 MiB (256 MiB) of random bytes, raw.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use s3block_cache::{BlockCache, CacheConfig};
use s3block_core::{BlockDevice, BlockDeviceExt, BlockId, Geometry, KeyLayout};
use s3block_store::{ObjectBlockDevice, StoreConfig};

const BLOCKS: u64 = 256;
const BS: u64 = 1 << 20;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: ranged_reads STORE_URL [READS]")?;
    let reads: u64 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(2000);
    let env: HashMap<String, String> = std::env::vars().collect();
    let opened = StoreConfig::new(url).env(env).open()?;
    let counters = opened.counters.clone();
    let geometry = Geometry::new(BLOCKS * BS, BS)?;
    let dev = ObjectBlockDevice::new(opened.store, KeyLayout::new(opened.prefix, false), geometry)
        .with_counters(counters.clone());
    if dev.list_blocks().await?.len() < BLOCKS as usize {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for b in 0..BLOCKS {
            let mut data = vec![0u8; BS as usize];
            rng.fill(&mut data[..]);
            dev.write_block(BlockId(b as u32), Bytes::from(data)).await?;
        }
        eprintln!("wrote {BLOCKS} blocks of {BS} bytes");
    }
    println!(
        "pass\tmode\treads\tsecs\treads_per_sec\tmisses\tgets\tranged_gets\tbytes_per_read\tbytes_per_miss"
    );
    for (pass, ranged) in [("cold", false), ("cold", true), ("random", false), ("random", true)] {
        let config = CacheConfig::builder()
            .cache_size(256 << 20)
            .ranged_reads(ranged)
            .counters(counters.clone())
            .build();
        // A fresh cache each time: every block starts cold.
        let cache = Arc::new(BlockCache::new(dev.clone(), config)?);
        counters.reset();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let pages: Vec<u64> = if pass == "cold" {
            let mut blocks: Vec<u64> = (0..BLOCKS).collect();
            for i in (1..blocks.len()).rev() {
                blocks.swap(i, rng.random_range(0..=i));
            }
            blocks.into_iter().map(|b| b * (BS / 4096) + rng.random_range(0..BS / 4096)).collect()
        } else {
            (0..reads).map(|_| rng.random_range(0..BLOCKS * BS / 4096)).collect()
        };
        let reads = pages.len() as u64;
        let started = Instant::now();
        for page in pages {
            cache.read_at(page * 4096, 4096).await?;
        }
        let secs = started.elapsed().as_secs_f64();
        let c = counters.snapshot();
        let misses = cache.stats().misses;
        println!(
            "{pass}\t{}\t{reads}\t{secs:.2}\t{:.0}\t{misses}\t{}\t{}\t{:.0}\t{:.0}",
            if ranged { "ranged" } else { "whole" },
            reads as f64 / secs,
            c.gets,
            c.ranged_gets,
            c.fetch_bytes_received as f64 / reads as f64,
            c.fetch_bytes_received as f64 / misses.max(1) as f64,
        );
        cache.close().await?;
    }
    Ok(())
}
