//! Test doubles that wrap any [`BlockDevice`]: a seeded fault injector, a
//! request counter and a gate that holds requests in flight.
//!
//! The cache's tests use them over [`MemoryDevice`](s3block_core::MemoryDevice);
//! the same tests run over the object store by wrapping it instead.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use s3block_core::{Allocation, BlockDevice, BlockId, Error, Geometry, Result, StoreErrorKind, is_zero};
use tokio::sync::Notify;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fails a seeded fraction of requests with transient errors and delays
/// requests, with occasional long spikes.
#[derive(Debug)]
pub struct FlakyDevice<D> {
    inner: D,
    /// The fraction of requests to fail, as f64 bits.
    error_rate: AtomicU64,
    latency: Duration,
    spike_rate: f64,
    spike: Duration,
    rng: Mutex<StdRng>,
    failures: AtomicU64,
}

impl<D: BlockDevice> FlakyDevice<D> {
    /// Fails `error_rate` of reads, writes and discards (0.0..=1.0), seeded.
    pub fn new(inner: D, error_rate: f64, seed: u64) -> Self {
        FlakyDevice {
            inner,
            error_rate: AtomicU64::new(error_rate.to_bits()),
            latency: Duration::ZERO,
            spike_rate: 0.0,
            spike: Duration::ZERO,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            failures: AtomicU64::new(0),
        }
    }

    /// Delays every request by up to `latency`, and `spike_rate` of them by `spike`.
    pub fn with_latency(mut self, latency: Duration, spike_rate: f64, spike: Duration) -> Self {
        self.latency = latency;
        self.spike_rate = spike_rate;
        self.spike = spike;
        self
    }

    /// The device below.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Changes the fraction of requests that fail.
    pub fn set_error_rate(&self, rate: f64) {
        self.error_rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// Requests failed so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    async fn disturb(&self, block: Option<BlockId>, what: &str) -> Result<()> {
        let (fail, delay) = {
            let mut rng = lock(&self.rng);
            let fail =
                rng.random_bool(f64::from_bits(self.error_rate.load(Ordering::Relaxed)).clamp(0.0, 1.0));
            let delay = if rng.random_bool(self.spike_rate.clamp(0.0, 1.0)) {
                self.spike
            } else {
                self.latency.mul_f64(rng.random::<f64>())
            };
            (fail, delay)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if fail {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Store {
                block,
                key: block.map_or_else(|| "(discard)".to_owned(), |b| format!("{:08x}", b.0)),
                kind: StoreErrorKind::Transient,
                source: format!("injected {what} failure").into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<D: BlockDevice> BlockDevice for FlakyDevice<D> {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }
    async fn read_block(&self, block: BlockId) -> Result<Bytes> {
        self.disturb(Some(block), "read").await?;
        self.inner.read_block(block).await
    }
    async fn write_block(&self, block: BlockId, data: Bytes) -> Result<()> {
        self.disturb(Some(block), "write").await?;
        self.inner.write_block(block, data).await
    }
    async fn read_partial(&self, block: BlockId, offset: u32, len: usize) -> Result<Bytes> {
        self.disturb(Some(block), "read").await?;
        self.inner.read_partial(block, offset, len).await
    }
    fn ranged_reads(&self) -> bool {
        self.inner.ranged_reads()
    }
    async fn write_partial(&self, block: BlockId, offset: u32, data: Bytes) -> Result<()> {
        self.disturb(Some(block), "write").await?;
        self.inner.write_partial(block, offset, data).await
    }
    async fn discard(&self, blocks: Range<u64>) -> Result<()> {
        self.disturb(None, "discard").await?;
        self.inner.discard(blocks).await
    }
    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }
    async fn block_status(&self, blocks: Range<u64>) -> Result<Vec<(Range<u64>, Allocation)>> {
        self.inner.block_status(blocks).await
    }
}

/// Calls seen by a [`CountingDevice`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCounts {
    /// Whole or partial block reads.
    pub reads: u64,
    /// Block writes with some non-zero byte (PUTs below).
    pub writes: u64,
    /// Block writes of all zeros (DELETEs below).
    pub zero_writes: u64,
    /// Discard calls.
    pub discards: u64,
    /// Flush calls.
    pub flushes: u64,
    /// Most writes in flight at once.
    pub max_concurrent_writes: u64,
    /// Most reads (whole or partial) in flight at once.
    pub max_concurrent_reads: u64,
}

impl DeviceCounts {
    /// Reads, writes, zero writes and discards: the calls that cost requests.
    pub fn requests(&self) -> u64 {
        self.reads + self.writes + self.zero_writes + self.discards
    }
}

/// Counts the calls made on the device it wraps, and the reads per block.
#[derive(Debug)]
pub struct CountingDevice<D> {
    inner: D,
    counts: Mutex<DeviceCounts>,
    per_block_reads: Mutex<HashMap<BlockId, u64>>,
    writing: AtomicU64,
    reading: AtomicU64,
}

impl<D: BlockDevice> CountingDevice<D> {
    /// Wraps `inner`.
    pub fn new(inner: D) -> Self {
        CountingDevice {
            inner,
            counts: Mutex::default(),
            per_block_reads: Mutex::default(),
            writing: AtomicU64::new(0),
            reading: AtomicU64::new(0),
        }
    }

    /// The device below.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Calls so far.
    pub fn counts(&self) -> DeviceCounts {
        *lock(&self.counts)
    }

    /// Reads of `block` so far.
    pub fn reads_of(&self, block: BlockId) -> u64 {
        lock(&self.per_block_reads).get(&block).copied().unwrap_or(0)
    }

    /// Sets every count back to zero.
    pub fn reset(&self) {
        *lock(&self.counts) = DeviceCounts::default();
        lock(&self.per_block_reads).clear();
    }

    async fn counted_read<F: Future<Output = Result<Bytes>>>(
        &self,
        block: BlockId,
        read: F,
    ) -> Result<Bytes> {
        let now = self.reading.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let mut c = lock(&self.counts);
            c.reads += 1;
            c.max_concurrent_reads = c.max_concurrent_reads.max(now);
        }
        *lock(&self.per_block_reads).entry(block).or_default() += 1;
        let r = read.await;
        self.reading.fetch_sub(1, Ordering::SeqCst);
        r
    }

    async fn counted_write<F: Future<Output = Result<()>>>(&self, zero: bool, write: F) -> Result<()> {
        let now = self.writing.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let mut c = lock(&self.counts);
            if zero {
                c.zero_writes += 1;
            } else {
                c.writes += 1;
            }
            c.max_concurrent_writes = c.max_concurrent_writes.max(now);
        }
        let r = write.await;
        self.writing.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<D: BlockDevice> BlockDevice for CountingDevice<D> {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }
    async fn read_block(&self, block: BlockId) -> Result<Bytes> {
        self.counted_read(block, self.inner.read_block(block)).await
    }
    async fn write_block(&self, block: BlockId, data: Bytes) -> Result<()> {
        self.counted_write(is_zero(&data), self.inner.write_block(block, data.clone())).await
    }
    async fn read_partial(&self, block: BlockId, offset: u32, len: usize) -> Result<Bytes> {
        self.counted_read(block, self.inner.read_partial(block, offset, len)).await
    }
    fn ranged_reads(&self) -> bool {
        self.inner.ranged_reads()
    }
    async fn write_partial(&self, block: BlockId, offset: u32, data: Bytes) -> Result<()> {
        self.counted_write(false, self.inner.write_partial(block, offset, data)).await
    }
    async fn discard(&self, blocks: Range<u64>) -> Result<()> {
        lock(&self.counts).discards += 1;
        self.inner.discard(blocks).await
    }
    async fn flush(&self) -> Result<()> {
        lock(&self.counts).flushes += 1;
        self.inner.flush().await
    }
    async fn block_status(&self, blocks: Range<u64>) -> Result<Vec<(Range<u64>, Allocation)>> {
        self.inner.block_status(blocks).await
    }
}

/// Holds reads and writes of chosen blocks until released, so a test can
/// act while a request is in flight.
#[derive(Debug)]
pub struct GatedDevice<D> {
    inner: D,
    held: Mutex<HashSet<BlockId>>,
    arrived: Mutex<HashMap<BlockId, u64>>,
    changed: Notify,
}

impl<D: BlockDevice> GatedDevice<D> {
    /// Wraps `inner` with every gate open.
    pub fn new(inner: D) -> Self {
        GatedDevice { inner, held: Mutex::default(), arrived: Mutex::default(), changed: Notify::new() }
    }

    /// The device below.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Makes requests for `block` wait until [`release`](Self::release).
    pub fn hold(&self, block: BlockId) {
        lock(&self.held).insert(block);
    }

    /// Lets requests for `block` through.
    pub fn release(&self, block: BlockId) {
        lock(&self.held).remove(&block);
        self.changed.notify_waiters();
    }

    /// Requests for `block` that reached the gate so far.
    pub fn arrived(&self, block: BlockId) -> u64 {
        lock(&self.arrived).get(&block).copied().unwrap_or(0)
    }

    /// Waits until `n` requests for `block` have reached the gate.
    pub async fn wait_arrived(&self, block: BlockId, n: u64) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.arrived(block) >= n {
                return;
            }
            notified.await;
        }
    }

    async fn pass(&self, block: BlockId) {
        *lock(&self.arrived).entry(block).or_default() += 1;
        self.changed.notify_waiters();
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !lock(&self.held).contains(&block) {
                return;
            }
            notified.await;
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<D: BlockDevice> BlockDevice for GatedDevice<D> {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }
    async fn read_block(&self, block: BlockId) -> Result<Bytes> {
        self.pass(block).await;
        self.inner.read_block(block).await
    }
    async fn write_block(&self, block: BlockId, data: Bytes) -> Result<()> {
        self.pass(block).await;
        self.inner.write_block(block, data).await
    }
    async fn read_partial(&self, block: BlockId, offset: u32, len: usize) -> Result<Bytes> {
        self.pass(block).await;
        self.inner.read_partial(block, offset, len).await
    }
    fn ranged_reads(&self) -> bool {
        self.inner.ranged_reads()
    }
    async fn write_partial(&self, block: BlockId, offset: u32, data: Bytes) -> Result<()> {
        self.pass(block).await;
        self.inner.write_partial(block, offset, data).await
    }
    async fn discard(&self, blocks: Range<u64>) -> Result<()> {
        self.inner.discard(blocks).await
    }
    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }
    async fn block_status(&self, blocks: Range<u64>) -> Result<Vec<(Range<u64>, Allocation)>> {
        self.inner.block_status(blocks).await
    }
}
