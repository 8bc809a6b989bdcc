//! Uploads that fail for ten minutes (paused time) are logged once, then
//! once a minute with a count, then once when they succeed again: not once
//! per failed attempt, which would bury the journal during an outage.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{block_data, config, geometry, settle};
use s3block_cache::BlockCache;
use s3block_cache::testing::FlakyDevice;
use s3block_core::{Backoff, BlockDevice, BlockId, MemoryDevice};

/// The log lines written so far.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(start_paused = true)]
async fn ten_minutes_of_failed_uploads_are_a_dozen_lines() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let mem = Arc::new(MemoryDevice::new(geometry(16)));
    let flaky = Arc::new(FlakyDevice::new(Arc::clone(&mem), 1.0, 7));
    let g = flaky.geometry();
    // Retries every second or two: hundreds of failures in ten minutes.
    let schedule = Backoff::new(Duration::from_millis(500), Duration::from_secs(2)).with_seed(5);
    let cache =
        BlockCache::new(Arc::clone(&flaky), config(&g, 16, 8).to_builder().upload_retry(schedule).build())
            .unwrap();
    for b in 0..8 {
        cache.write_block(BlockId(b), block_data(&g, b, 1)).await.unwrap();
    }
    for _ in 0..600 {
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
    }
    let failures = cache.stats().upload_errors;
    assert!(failures > 1000, "the test should fail uploads often: {failures}");
    let text = lines.text();
    let said: Vec<&str> = text.lines().filter(|l| l.contains("block upload")).collect();
    assert!(said[0].contains("WARN") && said[0].contains("block upload failed"), "{text}");
    assert!(said[1..].iter().all(|l| l.contains("keep failing")), "{text}");
    // The first, then one a minute (the tenth may fall just past the end).
    assert!((10..=11).contains(&said.len()), "{} lines for {failures} failures:\n{text}", said.len());
    let counted: u64 = said[1..]
        .iter()
        .map(|l| l.split("failing: ").nth(1).unwrap().split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    // Every failure but those of the last minute (not said yet) is counted.
    let unsaid = failures - 1 - counted;
    assert!((1..400).contains(&unsaid), "{counted} said of {failures}:\n{text}");

    // The store works again: one line says so, with the count.
    flaky.set_error_rate(0.0);
    cache.flush().await.unwrap();
    let text = lines.text();
    let end: Vec<&str> = text.lines().filter(|l| l.contains("succeed again")).collect();
    assert_eq!(end.len(), 1, "{text}");
    assert!(end[0].contains(&format!("after {failures} failures over 9m5")), "{text}");
    assert_eq!(mem.stored_blocks(), 8);
    cache.close().await.unwrap();
}
