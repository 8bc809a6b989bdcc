//! `--metrics ADDR:PORT`: the mount's figures for Prometheus, over HTTP.
//!
//! `GET /metrics` answers in the Prometheus text format (version 0.0.4),
//! written by the `prometheus-client` crate. Nothing is counted twice: a
//! scrape takes the same snapshot the stats files show ([`MountStats`],
//! through a [`Collector`] that reads it at scrape time), plus the store's
//! health and whether the mount lock is held. The metric names and what
//! they mean are listed in `docs/STATS.md`.
//!
//! The server is small on purpose, for a host with 128 MB of RAM and a
//! scraper or two: HTTP/1 only (hyper's server), one request per connection,
//! at most [`MAX_CONNECTIONS`] connections at once (more are closed at
//! once), a request head of at most 8 KiB (a larger one gets 431), 5 s to
//! send it and 10 s for the whole exchange. Only `GET` and `HEAD` of
//! `/metrics` are served: another path gets 404, another method 405, a
//! request that is not HTTP 400 (from hyper). Request bodies are never
//! read.
//!
//! The address is loopback unless asked otherwise (a bare port means
//! `127.0.0.1:PORT`), and the listener is bound when the frontend starts,
//! before the volume is opened, so a port already taken fails the start
//! naming the address.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use s3block_core::{LATENCY_BUCKETS_MS, StoreHealth};

use crate::MountStats;
use crate::report::Histogram;

/// Connections served at once; more are closed as they come.
pub const MAX_CONNECTIONS: usize = 4;
/// The time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The time a whole exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head read, in bytes (hyper's smallest allowed).
const MAX_HEAD: usize = 8192;

/// Parses `--metrics`: `PORT` (on 127.0.0.1), `ADDR:PORT` or `[V6ADDR]:PORT`.
pub fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        format!(
            "{s:?} is not a port or an address with a port: expected PORT (on 127.0.0.1), \
             ADDR:PORT or [IPv6]:PORT, e.g. 9477, 0.0.0.0:9477 or [::]:9477"
        )
    })
}

/// What a scrape shows: the stats files' figures, the store's health and
/// the lock.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// The figures the stats files show.
    pub stats: MountStats,
    /// Whether the store answers now.
    pub health: StoreHealth,
    /// Whether this mount holds the volume's lock (a read-only mount takes none).
    pub lock_held: bool,
}

type SnapshotFn = Arc<dyn Fn() -> MetricsSnapshot + Send + Sync>;

/// A scrape's metrics: the [`Collector`] over a snapshot function, in a
/// registry whose labels name the volume's store and bucket.
pub struct Metrics {
    registry: Registry,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics read from `snapshot` at each scrape, every series labelled
    /// `store` (`s3`, `file` or `memory`) and `bucket` (one value each for
    /// the life of the process).
    pub fn new(
        store: &str,
        bucket: &str,
        snapshot: impl Fn() -> MetricsSnapshot + Send + Sync + 'static,
    ) -> Self {
        let labels = [
            (Cow::Borrowed("store"), Cow::Owned(store.to_owned())),
            (Cow::Borrowed("bucket"), Cow::Owned(bucket.to_owned())),
        ];
        let mut registry = Registry::with_labels(labels.into_iter());
        registry.register_collector(Box::new(VolumeCollector(Arc::new(snapshot))));
        Metrics { registry }
    }

    /// The text of a scrape, now.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String does not fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

struct VolumeCollector(SnapshotFn);

impl std::fmt::Debug for VolumeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VolumeCollector")
    }
}

/// A sample of a family: its own labels (beside the store's), and its value.
type Sample<'a, M> = (&'a [(&'a str, &'a str)], M);

/// Writes one metric family: its HELP and TYPE, then one sample per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[Sample<'_, M>],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(n: u64) -> ConstCounter<u64> {
    ConstCounter::new(n)
}

fn gauge(n: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Collector for VolumeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let MetricsSnapshot { stats, health, lock_held } = (self.0)();
        let (q, c, r) = (&stats.requests, &stats.cache, &stats.reads);
        let ok = |attempts: u64, retried: u64, failed: u64| attempts.saturating_sub(retried + failed);
        let (rm, fm) = (&q.retries_by_method, &q.errors_by_method);
        let mut requests = Vec::new();
        for (method, attempts, retried, failed) in [
            ("GET", q.gets, rm.get, fm.get),
            ("PUT", q.puts, rm.put, fm.put),
            ("DELETE", q.deletes, rm.delete, fm.delete),
            ("LIST", q.lists, rm.list, fm.list),
        ] {
            requests.push((method, "ok", ok(attempts, retried, failed)));
            requests.push((method, "retried", retried));
            requests.push((method, "failed", failed));
        }
        let labels: Vec<[(&str, &str); 2]> =
            requests.iter().map(|(m, o, _)| [("method", *m), ("outcome", *o)]).collect();
        let samples: Vec<Sample<'_, _>> =
            labels.iter().zip(&requests).map(|(l, (_, _, n))| (&l[..], counter(*n))).collect();
        family(
            &mut e,
            "s3block_requests",
            "Requests to the object store by method and outcome: ok (answered, a 404 included), \
             retried (failed and made again), failed (failed for good); each attempt counts once",
            MetricType::Counter,
            &samples,
        )?;
        family(
            &mut e,
            "s3block_requests_by_purpose",
            "Requests to the object store by what they were for",
            MetricType::Counter,
            &[
                (&[("purpose", "block_fetch")], counter(q.block_fetches)),
                (&[("purpose", "read_ahead_fetch")], counter(q.read_ahead_fetches)),
                (&[("purpose", "upload_fetch")], counter(q.upload_fetches)),
                (&[("purpose", "block_upload")], counter(q.block_uploads)),
                (&[("purpose", "block_delete")], counter(q.block_deletes)),
                (&[("purpose", "metadata_get")], counter(q.metadata_gets)),
                (&[("purpose", "metadata_put")], counter(q.metadata_puts)),
                (&[("purpose", "metadata_delete")], counter(q.metadata_deletes)),
                (&[("purpose", "list")], counter(q.lists)),
            ],
        )?;
        let plain: [(&str, &str, u64); 10] = [
            ("s3block_deleted_keys", "Keys deleted by DELETE requests", q.keys_deleted),
            ("s3block_sent_bytes", "Bytes sent in request bodies", q.bytes_sent),
            ("s3block_received_bytes", "Bytes received in response bodies", q.bytes_received),
            (
                "s3block_fetch_received_bytes",
                "Bytes of the block GETs readers waited for (over the cache misses: bytes per read miss)",
                q.fetch_bytes_received,
            ),
            ("s3block_ranged_gets", "Block GETs of a byte range (ranged reads)", q.ranged_gets),
            (
                "s3block_blocks_stored",
                "Dirty blocks the cache stored (a PUT each, a DELETE for a block now zero)",
                stats.write_back.blocks_stored,
            ),
            (
                "s3block_upload_errors",
                "Block uploads that failed (the block stays dirty)",
                stats.write_back.errors,
            ),
            (
                "s3block_writer_waits",
                "Writers that waited for room under the dirty limit",
                stats.write_back.writer_waits,
            ),
            (
                "s3block_unchanged_writes",
                "Writes of bytes the block held already: nothing to upload",
                stats.write_back.unchanged_writes,
            ),
            ("s3block_fetch_waits", "Fetches that waited for a free fetch slot", stats.reads.fetch_waits),
        ];
        for (name, help, n) in plain {
            family(&mut e, name, help, MetricType::Counter, &[(&[], counter(n))])?;
        }
        let l = &q.latency;
        {
            let mut latency = e.encode_descriptor(
                "s3block_request_duration_seconds",
                "How long requests to the object store took, a GET until its body was read",
                None,
                MetricType::Histogram,
            )?;
            for (method, h) in [("GET", &l.get), ("PUT", &l.put), ("DELETE", &l.delete), ("LIST", &l.list)] {
                let buckets = histogram_buckets(h);
                latency.encode_family(&[("method", method)])?.encode_histogram::<NoLabelSet>(
                    h.sum_micros as f64 / 1e6,
                    h.count,
                    &buckets,
                    None,
                )?;
            }
        }
        let bw = &q.bandwidth;
        family(
            &mut e,
            "s3block_bandwidth_cap_bytes_per_second",
            "--max-upload-speed and --max-download-speed in bytes a second (0: uncapped)",
            MetricType::Gauge,
            &[
                (&[("direction", "upload")], gauge(bw.upload_cap_bytes)),
                (&[("direction", "download")], gauge(bw.download_cap_bytes)),
            ],
        )?;
        family(
            &mut e,
            "s3block_bandwidth_wait_seconds",
            "Time requests waited for the bandwidth caps, added up over concurrent requests",
            MetricType::Counter,
            &[
                (&[("direction", "upload")], ConstCounter::new(bw.upload_wait_micros as f64 / 1e6)),
                (&[("direction", "download")], ConstCounter::new(bw.download_wait_micros as f64 / 1e6)),
            ],
        )?;
        let cost = ConstGauge::new(stats.cost.requests_dollars);
        family(
            &mut e,
            "s3block_request_cost_dollars",
            "What the requests cost at the configured prices: (PUT + LIST) at the PUT price, GET at the \
             GET price",
            MetricType::Gauge,
            &[(&[], cost)],
        )?;
        let mut reads: Vec<Sample<'_, _>> = vec![
            (&[("tier", "memory"), ("result", "hit")], counter(r.hits)),
            (&[("tier", "memory"), ("result", "read_ahead_hit")], counter(r.read_ahead_hits)),
            (&[("tier", "memory"), ("result", "zero_hit")], counter(r.zero_hits)),
            (&[("tier", "memory"), ("result", "miss")], counter(r.misses)),
        ];
        if let Some(d) = &stats.disk {
            reads.push((&[("tier", "disk"), ("result", "hit")], counter(d.hits)));
            reads.push((&[("tier", "disk"), ("result", "miss")], counter(d.misses)));
        }
        let w = &r.whole_block;
        family(
            &mut e,
            "s3block_whole_block_misses",
            "Read misses that could have fetched part of their block and waited for the whole block, by \
             the rule that chose it",
            MetricType::Counter,
            &[
                (&[("rule", "written")], counter(w.written)),
                (&[("rule", "in_flight")], counter(w.in_flight)),
                (&[("rule", "large")], counter(w.large)),
                (&[("rule", "sequential")], counter(w.sequential)),
                (&[("rule", "next_block")], counter(w.next_block)),
                (&[("rule", "dense")], counter(w.dense)),
            ],
        )?;
        let u = &stats.write_back.started;
        family(
            &mut e,
            "s3block_uploads_started",
            "Block uploads the cache started, retries aside, by why each started when it did: written \
             whole, after the write delay, for a flush, over the dirty limit",
            MetricType::Counter,
            &[
                (&[("cause", "written_whole")], counter(u.written_whole)),
                (&[("cause", "delay")], counter(u.delay)),
                (&[("cause", "flush")], counter(u.flush)),
                (&[("cause", "dirty_limit")], counter(u.dirty_limit)),
            ],
        )?;
        family(
            &mut e,
            "s3block_cache_reads",
            "Block reads by cache tier and result: memory hits, first reads of blocks fetched ahead, \
             reads of blocks known to be zero, misses; the disk cache's hits and misses are the memory \
             cache's misses",
            MetricType::Counter,
            &reads,
        )?;
        let disk = stats.disk.as_ref();
        let by_tier = |memory: u64, disk_value: Option<u64>| {
            let mut v: Vec<Sample<'_, ConstGauge<i64>>> = vec![(&[("tier", "memory")], gauge(memory))];
            if let Some(d) = disk_value {
                v.push((&[("tier", "disk")], gauge(d)));
            }
            v
        };
        family(
            &mut e,
            "s3block_cache_size_bytes",
            "The cache's capacity",
            MetricType::Gauge,
            &by_tier(c.size_bytes, disk.map(|d| d.size_bytes)),
        )?;
        family(
            &mut e,
            "s3block_cache_used_bytes",
            "Block data the cache holds now, clean or dirty",
            MetricType::Gauge,
            &by_tier(c.resident_bytes, disk.map(|d| d.used_bytes)),
        )?;
        family(
            &mut e,
            "s3block_dirty_bytes",
            "Data written and not yet stored in the bucket (on the disk tier: every version waiting)",
            MetricType::Gauge,
            &by_tier(c.dirty_bytes, disk.map(|d| d.unstored_bytes)),
        )?;
        family(
            &mut e,
            "s3block_dirty_blocks",
            "Blocks written and not yet stored in the bucket",
            MetricType::Gauge,
            &by_tier(c.dirty_blocks, disk.map(|d| d.unstored_blocks)),
        )?;
        family(
            &mut e,
            "s3block_upload_queue_blocks",
            "The memory cache's dirty blocks: uploading now, or waiting for an upload",
            MetricType::Gauge,
            &[
                (&[("state", "uploading")], gauge(c.uploads_in_flight)),
                (&[("state", "waiting")], gauge(c.dirty_blocks.saturating_sub(c.uploads_in_flight))),
            ],
        )?;
        family(
            &mut e,
            "s3block_lock_held",
            "1 while this mount holds the volume's lock",
            MetricType::Gauge,
            &[(&[], gauge(u64::from(lock_held)))],
        )?;
        family(
            &mut e,
            "s3block_store_reachable",
            "0 while the store does not answer and requests are being retried, else 1",
            MetricType::Gauge,
            &[(&[], gauge(u64::from(health.unreachable_since.is_none())))],
        )?;
        let since = health
            .unreachable_since
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        family(
            &mut e,
            "s3block_store_unreachable_since_seconds",
            "When the store stopped answering, in seconds since the Unix epoch (0 while it answers)",
            MetricType::Gauge,
            &[(&[], ConstGauge::new(since))],
        )?;
        family(
            &mut e,
            "s3block_requests_waiting",
            "Requests that failed and wait to be retried, now",
            MetricType::Gauge,
            &[(&[], gauge(health.waiting))],
        )?;
        if let Some(d) = disk {
            let oldest = d.oldest_unstored_secs.unwrap_or(0.0);
            family(
                &mut e,
                "s3block_disk_oldest_unstored_seconds",
                "Age of the oldest block on the local disk only (0 when none)",
                MetricType::Gauge,
                &[(&[], ConstGauge::new(oldest))],
            )?;
            family(
                &mut e,
                "s3block_disk_spills",
                "Writes sent straight to the store because the local disk failed",
                MetricType::Counter,
                &[(&[], counter(d.spills))],
            )?;
        }
        Ok(())
    }
}

/// A histogram's buckets as prometheus-client takes them: upper bounds in
/// seconds with their own (not cumulative) counts, the last one `+Inf`.
fn histogram_buckets(h: &Histogram) -> Vec<(f64, u64)> {
    let mut buckets: Vec<(f64, u64)> =
        LATENCY_BUCKETS_MS.iter().zip(&h.buckets).map(|(ms, n)| (*ms as f64 / 1000.0, *n)).collect();
    buckets.push((f64::INFINITY, h.buckets[LATENCY_BUCKETS_MS.len()]));
    buckets
}

/// The `--metrics` listener, bound at start and served once the volume is open.
#[derive(Debug)]
pub struct MetricsServer {
    listener: std::net::TcpListener,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Listens on `addr`; the error names it (`--metrics 127.0.0.1:9477:
    /// cannot listen: Address already in use`).
    pub fn bind(addr: SocketAddr) -> Result<Self, String> {
        let fail = |e: std::io::Error| format!("--metrics {addr}: cannot listen: {e}");
        let listener = std::net::TcpListener::bind(addr).map_err(fail)?;
        listener.set_nonblocking(true).map_err(fail)?;
        let addr = listener.local_addr().map_err(fail)?;
        Ok(MetricsServer { listener, addr })
    }

    /// The address listened on (the port chosen when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `metrics` on the current tokio runtime until it stops.
    pub fn serve(self, metrics: Metrics) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        let metrics = Arc::new(metrics);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        Ok(tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, most likely: wait a little.
                        tracing::debug!("--metrics: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::debug!("--metrics: {MAX_CONNECTIONS} connections already; one closed");
                    continue;
                };
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let metrics = metrics.clone();
                        async move { Ok::<_, Infallible>(answer(&req, &metrics)) }
                    });
                    let mut http = hyper::server::conn::http1::Builder::new();
                    http.keep_alive(false)
                        .max_buf_size(MAX_HEAD)
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEAD_TIMEOUT);
                    let conn = http.serve_connection(TokioIo::new(stream), service);
                    match tokio::time::timeout(EXCHANGE_TIMEOUT, conn).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::debug!("--metrics: {e}"),
                        Err(_) => {
                            tracing::debug!("--metrics: a client took longer than {EXCHANGE_TIMEOUT:?}")
                        }
                    }
                    drop(slot);
                });
            }
        }))
    }
}

/// The answer to one request.
fn answer(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, text: &str| {
        let mut r = Response::new(Full::new(Bytes::from(text.to_owned())));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
        r
    };
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "not found: s3block serves /metrics only\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: GET /metrics\n");
        r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(prometheus_text::CONTENT_TYPE));
    r
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
