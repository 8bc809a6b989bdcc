//! [`MountStats`]: a mount's statistics as data, the one source of both the
//! mount's text stats file and its `stats.json`, and of `s3block stats`.
//!
//! The mount program fills it from the cache's [`CacheStats`] and the
//! store's [`RequestCounts`]; it serialises to JSON with stable snake_case
//! keys, every count and byte count an integer, and renders the text file
//! people read. `s3block stats` reads the JSON back into the same struct.
//! The schema is documented field by field here and in `docs/STATS.md`;
//! fields may be added (a reader ignores what it does not know), none is
//! renamed or removed without raising [`STATS_FORMAT`].
//!
//! The numbers add up, and the text says how:
//! - every block read is exactly one of a hit, a read-ahead hit, a
//!   zero-block hit or a miss, so `reads.total` is their sum, and the hit
//!   ratio counts only the reads that needed no request at all;
//! - every request is in exactly one line by purpose (block fetches,
//!   read-ahead fetches, upload fetches, block uploads, block deletes, the
//!   lock and descriptor, lists), which add up to `requests.total`, and
//!   again by method (GET, PUT, DELETE, LIST).

use std::fmt::Write as _;

use s3block_core::format_count as count;
use s3block_core::{LATENCY_BUCKETS_MS, LatencyHistogram, MethodCounts, RequestCounts, format_size};
use serde::{Deserialize, Serialize};

use crate::stats::CacheStats;

/// Version of the [`MountStats`] schema, its `format` field.
pub const STATS_FORMAT: u32 = 1;

/// A mount's statistics at one moment. Counters count from the mount's
/// start or from the last reset (unlinking the stats file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MountStats {
    /// The schema version, [`STATS_FORMAT`].
    pub format: u32,
    /// What the cache holds now.
    pub cache: CacheFigures,
    /// Block reads, each counted once by how it was served.
    pub reads: ReadFigures,
    /// Blocks fetched ahead of a sequential reader.
    pub read_ahead: ReadAheadFigures,
    /// Dirty blocks stored below.
    pub write_back: WriteBackFigures,
    /// Requests made to the object store.
    pub requests: RequestFigures,
    /// What the requests cost.
    pub cost: CostFigures,
    /// The disk cache, when the frontend keeps one (`--cache-dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskFigures>,
    /// What the volume holds in the bucket, when the frontend follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<StoredFigures>,
}

/// The volume's objects in the bucket: counted once (a listing, or nothing
/// for a volume the mount created), then followed as blocks are stored and
/// deleted; and what storing them costs a month.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredFigures {
    /// How the figure was obtained: `created` (empty at creation, then
    /// followed), `listing` (the listing runs: partial), `listed` (counted
    /// by a listing, then followed), `failed` (the listing failed:
    /// unknown), `unfollowed` (as of when it stopped following).
    pub source: String,
    /// Block objects in the bucket.
    pub objects: u64,
    /// Bytes of those objects.
    pub bytes: u64,
    /// When the baseline was taken (the volume created, or the listing
    /// started), UTC, as `YYYYMMDDTHHMMSSZ` (the mount lock's format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_at: Option<String>,
    /// Milliseconds the baseline listing took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing_millis: Option<u64>,
    /// LIST requests the baseline listing made (one per 1000 keys; also
    /// in `requests.lists`).
    pub listing_requests: u64,
    /// Why the listing failed, or why the figure stopped following.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The disk cache: what it holds, what it served, and what losing the
/// local disk would cost now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DiskFigures {
    /// `remote` or `local`: when fsync returns.
    pub durability: String,
    /// Most bytes on disk (`--disk-cache-size`).
    pub size_bytes: u64,
    /// Bytes of the cache files now.
    pub used_bytes: u64,
    /// Blocks cached on disk.
    pub blocks: u64,
    /// Blocks whose newest data is on the local disk only.
    pub unstored_blocks: u64,
    /// Bytes on the local disk only (every version waiting).
    pub unstored_bytes: u64,
    /// Age in seconds of the oldest data on the local disk only.
    pub oldest_unstored_secs: Option<f64>,
    /// Reads served from the disk (no request).
    pub hits: u64,
    /// Reads that went on to the store.
    pub misses: u64,
    /// Entries stored in the bucket from the disk.
    pub uploads: u64,
    /// Writes that went straight to the store because the disk failed.
    pub spills: u64,
    /// Writes that waited for the disk cache's dirty budget.
    pub waits: u64,
    /// Damaged entries found (never served).
    pub corrupt_entries: u64,
    /// RAM of the disk cache's index, in bytes.
    pub index_bytes: u64,
}

/// What the cache holds now (gauges, not counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheFigures {
    /// The cache's capacity in bytes.
    pub size_bytes: u64,
    /// Bytes of block data held in memory.
    pub resident_bytes: u64,
    /// Blocks held in memory, clean or dirty.
    pub resident_blocks: u64,
    /// Blocks written but not yet stored.
    pub dirty_blocks: u64,
    /// Bytes of those blocks held in memory.
    pub dirty_bytes: u64,
    /// Uploads running now.
    pub uploads_in_flight: u64,
    /// Blocks known to be zero below, read without a request.
    pub known_zero_blocks: u64,
}

/// Block reads: `total == hits + read_ahead_hits + zero_hits + misses`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadFigures {
    /// Every block read (a read spanning blocks counts once per block).
    pub total: u64,
    /// Served from memory, the block already there (read or written before).
    pub hits: u64,
    /// The first read of a block that read-ahead fetched: served from
    /// memory or from the fetch in flight, but a request was made for it.
    pub read_ahead_hits: u64,
    /// Reads of blocks known to be zero: no request.
    pub zero_hits: u64,
    /// Reads that waited for a fetch of their block.
    pub misses: u64,
    /// `(hits + zero_hits) / total`: reads that needed no request at all
    /// (0 when there were no reads).
    pub hit_ratio: f64,
    /// Fetches from the store that waited for a free fetch slot
    /// (`--fetch-concurrency`), whether for a reader or ahead of one.
    #[serde(default)]
    pub fetch_waits: u64,
    /// Of the misses, those on a volume with ranged reads that fetched (or
    /// joined a fetch of) the whole block, by the rule that chose it
    /// (absent from a file written before it was added).
    #[serde(default)]
    pub whole_block: WholeBlockFigures,
}

/// Read misses that could have fetched part of their block (ranged reads
/// on, the blocks stored raw, blocks of 256 KiB or more: under that a
/// 64 KiB granule is more than a quarter of a block, so no read fetches a
/// part) and waited for the whole block instead (a fetch of their own, or
/// one in flight), each counted under the first of these that held. The
/// other such misses made a ranged GET each (`requests.ranged_gets`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WholeBlockFigures {
    /// The block was partly written: its stored bytes complete it.
    pub written: u64,
    /// A fetch of the block was in flight already.
    pub in_flight: u64,
    /// The read's 64 KiB granules were more than a quarter of the block.
    pub large: u64,
    /// The read started where the last read ended, in the same block.
    pub sequential: u64,
    /// A sequential run went on: the read started its block, the one after
    /// the block the last read ended at the end of, or at least the two
    /// reads before it went on in sequence (each on the block after the
    /// last, or from where the last ended).
    pub next_block: u64,
    /// With the pages fetched before, more than half the block was asked
    /// for (while the cache was not thrashing).
    pub dense: u64,
}

impl WholeBlockFigures {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.written + self.in_flight + self.large + self.sequential + self.next_block + self.dense
    }
}

/// Read-ahead: blocks fetched before a sequential reader asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadAheadFigures {
    /// Blocks fetched ahead.
    pub issued: u64,
    /// Of those, blocks then read (`reads.read_ahead_hits`).
    pub used: u64,
}

/// Write-back: dirty blocks stored below.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteBackFigures {
    /// Blocks stored: a PUT each, or a DELETE for a block now all zeros.
    pub blocks_stored: u64,
    /// Uploads tried again after a failure.
    pub retries: u64,
    /// Uploads that failed (the block stays dirty and is tried again).
    pub errors: u64,
    /// Writers that waited for room under the dirty limit.
    pub writer_waits: u64,
    /// Writes of bytes the block held already (zeros over a zero block
    /// among them): nothing to store, no upload (absent from a file written
    /// before it was added).
    #[serde(default)]
    pub unchanged_writes: u64,
    /// The uploads started, retries aside, by why each started when it did
    /// (absent from a file written before it was added).
    #[serde(default)]
    pub started: UploadStartFigures,
}

/// The uploads the write-back started, not counting retries (those are
/// `write_back.retries`), each under the first of these that held when it
/// started. Together they say what the PUTs of the blocks were for: a
/// longer `--write-delay` gathers more rewrites into the `delay` ones, and
/// the `flush` ones follow the fsyncs of the programs above.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UploadStartFigures {
    /// The block was written whole and had not been uploaded within the
    /// write delay: uploaded at once (`--prompt-uploads`).
    pub written_whole: u64,
    /// The block's write delay had passed.
    pub delay: u64,
    /// Before its delay, because a flush waited for it: an fsync, a sync,
    /// an unmount.
    pub flush: u64,
    /// Before its delay, because dirty data was above half the dirty limit
    /// or a writer waited for room under it.
    pub dirty_limit: u64,
}

impl UploadStartFigures {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.written_whole + self.delay + self.flush + self.dirty_limit
    }
}

/// Requests made to the object store. Each is counted once by purpose and
/// once by method:
///
/// - `total == block_fetches + read_ahead_fetches + upload_fetches +
///   block_uploads + block_deletes + metadata_gets + metadata_puts +
///   metadata_deletes + lists`
/// - `total == gets + puts + deletes + lists`
///
/// A request that failed and was tried again counts once per attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFigures {
    /// All requests.
    pub total: u64,
    /// GETs of blocks a reader waited for.
    pub block_fetches: u64,
    /// GETs of blocks fetched ahead of a sequential reader.
    pub read_ahead_fetches: u64,
    /// GETs of blocks to complete a partly written block before its upload.
    pub upload_fetches: u64,
    /// PUTs of blocks.
    pub block_uploads: u64,
    /// DELETE requests for blocks (written as zeros, or discarded).
    pub block_deletes: u64,
    /// GETs of the mount lock, the volume descriptor and probes, and HEADs
    /// (block 0's geometry).
    pub metadata_gets: u64,
    /// PUTs of the mount lock, the volume descriptor and probes.
    pub metadata_puts: u64,
    /// DELETE requests for the mount lock and probes.
    pub metadata_deletes: u64,
    /// LIST requests (pages of up to 1000 keys).
    pub lists: u64,
    /// GET and HEAD requests.
    pub gets: u64,
    /// PUT requests.
    pub puts: u64,
    /// DELETE requests (each deletes up to 1000 keys).
    pub deletes: u64,
    /// Keys deleted by those requests.
    pub keys_deleted: u64,
    /// Attempts that failed and were made again (each is counted above).
    pub retries: u64,
    /// Requests that finally failed.
    pub errors: u64,
    /// Bytes sent in request bodies.
    pub bytes_sent: u64,
    /// Bytes received in response bodies.
    pub bytes_received: u64,
    /// Bytes of the block GETs readers waited for (`block_fetches`): over
    /// `reads.misses`, the bytes a read miss downloads (absent from a file
    /// written before it was added).
    #[serde(default)]
    pub fetch_bytes_received: u64,
    /// Block GETs that asked for a byte range (ranged reads), counted in
    /// `block_fetches` and `gets` too.
    #[serde(default)]
    pub ranged_gets: u64,
    /// How long the requests took, by method (absent from a file written
    /// before it was added).
    #[serde(default)]
    pub latency: LatencyFigures,
    /// `retries` by method.
    #[serde(default)]
    pub retries_by_method: MethodFigures,
    /// `errors` by method.
    #[serde(default)]
    pub errors_by_method: MethodFigures,
    /// The bandwidth caps and the time waited for them.
    #[serde(default)]
    pub bandwidth: BandwidthFigures,
}

/// The bandwidth caps (`--max-upload-speed`, `--max-download-speed`) and
/// the time requests waited for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthFigures {
    /// Cap on the bytes sent a second; 0: none.
    pub upload_cap_bytes: u64,
    /// Cap on the bytes received a second; 0: none.
    pub download_cap_bytes: u64,
    /// Microseconds uploads waited for the cap, added up.
    pub upload_wait_micros: u64,
    /// Microseconds downloads waited for the cap, added up.
    pub download_wait_micros: u64,
}

/// A count for each request method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodFigures {
    /// GET and HEAD requests.
    pub get: u64,
    /// PUT requests.
    pub put: u64,
    /// DELETE requests.
    pub delete: u64,
    /// LIST requests.
    pub list: u64,
}

impl From<MethodCounts> for MethodFigures {
    fn from(m: MethodCounts) -> Self {
        MethodFigures { get: m.get, put: m.put, delete: m.delete, list: m.list }
    }
}

/// Request latency histograms by method, with fixed buckets
/// ([`LATENCY_BUCKETS_MS`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyFigures {
    /// The buckets' upper bounds in milliseconds; each histogram has one
    /// more bucket, for the slower requests.
    pub bounds_ms: [u64; LATENCY_BUCKETS_MS.len()],
    /// GET and HEAD requests, until the body was read.
    pub get: Histogram,
    /// PUT requests.
    pub put: Histogram,
    /// DELETE requests.
    pub delete: Histogram,
    /// LIST requests (a listing, however many pages).
    pub list: Histogram,
}

/// One method's latency histogram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Requests counted.
    pub count: u64,
    /// Their latencies added up, in microseconds.
    pub sum_micros: u64,
    /// Requests per bucket (not cumulative), the last one slower than every bound.
    pub buckets: [u64; LATENCY_BUCKETS_MS.len() + 1],
}

impl From<&LatencyHistogram> for Histogram {
    fn from(h: &LatencyHistogram) -> Self {
        Histogram { count: h.count(), sum_micros: h.sum_micros, buckets: h.counts }
    }
}

impl Histogram {
    /// One line: the mean and the bounds half and 99% of the requests fall within.
    fn summary(&self) -> String {
        if self.count == 0 {
            return "no requests".to_owned();
        }
        let h = LatencyHistogram { counts: self.buckets, sum_micros: self.sum_micros };
        let within = |q: f64| match h.quantile_ms(q) {
            Some(ms) => format!("{ms} ms"),
            None => format!("more than {} ms", LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1]),
        };
        format!(
            "mean {:.1} ms, half within {}, 99% within {} ({} requests)",
            self.sum_micros as f64 / self.count as f64 / 1000.0,
            within(0.5),
            within(0.99),
            count(self.count)
        )
    }
}

/// The requests' cost at list prices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CostFigures {
    /// Dollars: (PUTs + LISTs) at the PUT price plus GETs at the GET
    /// price; DELETEs are free.
    pub requests_dollars: f64,
    /// Dollars per 1000 PUT or LIST requests.
    pub put_price_per_1000: f64,
    /// Dollars per 1000 GET requests.
    pub get_price_per_1000: f64,
    /// Dollars a month for the stored bytes (`stored.bytes`), when they are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_dollars_per_month: Option<f64>,
    /// Dollars per GB (2^30 bytes) stored for a month, when the stored
    /// bytes are shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_price_per_gb_month: Option<f64>,
}

impl MountStats {
    /// The figures of `cache` (its own `requests` are ignored) and
    /// `requests`, with the cost at these prices (dollars per 1000).
    pub fn new(cache: &CacheStats, requests: &RequestCounts, put_per_1000: f64, get_per_1000: f64) -> Self {
        let c = cache;
        let r = requests;
        let total_reads = c.hits + c.read_ahead_used + c.zero_hits + c.misses;
        MountStats {
            format: STATS_FORMAT,
            cache: CacheFigures {
                size_bytes: c.cache_size,
                resident_bytes: c.resident_bytes,
                resident_blocks: c.resident_blocks,
                dirty_blocks: c.dirty_blocks,
                dirty_bytes: c.dirty_bytes,
                uploads_in_flight: c.uploads_in_flight,
                known_zero_blocks: c.known_zero_blocks,
            },
            reads: ReadFigures {
                total: total_reads,
                hits: c.hits,
                read_ahead_hits: c.read_ahead_used,
                zero_hits: c.zero_hits,
                misses: c.misses,
                hit_ratio: if total_reads == 0 {
                    0.0
                } else {
                    (c.hits + c.zero_hits) as f64 / total_reads as f64
                },
                fetch_waits: c.fetch_waits,
                whole_block: c.whole_block,
            },
            read_ahead: ReadAheadFigures { issued: c.read_ahead_issued, used: c.read_ahead_used },
            write_back: WriteBackFigures {
                blocks_stored: c.uploads,
                retries: c.retries,
                errors: c.upload_errors,
                writer_waits: c.write_waits,
                unchanged_writes: c.unchanged_writes,
                started: c.upload_starts,
            },
            requests: RequestFigures {
                total: r.total(),
                block_fetches: r.block_fetches,
                read_ahead_fetches: r.read_ahead_fetches,
                upload_fetches: r.upload_fetches,
                block_uploads: r.block_uploads,
                block_deletes: r.block_deletes,
                metadata_gets: r.metadata_gets,
                metadata_puts: r.metadata_puts,
                metadata_deletes: r.metadata_deletes,
                lists: r.lists,
                gets: r.gets,
                puts: r.puts,
                deletes: r.bulk_deletes,
                keys_deleted: r.deletes,
                retries: r.retries,
                errors: r.errors,
                bytes_sent: r.bytes_sent,
                bytes_received: r.bytes_received,
                fetch_bytes_received: r.fetch_bytes_received,
                ranged_gets: r.ranged_gets,
                latency: LatencyFigures {
                    bounds_ms: LATENCY_BUCKETS_MS,
                    get: (&r.latency.get).into(),
                    put: (&r.latency.put).into(),
                    delete: (&r.latency.delete).into(),
                    list: (&r.latency.list).into(),
                },
                retries_by_method: r.retries_by_method.into(),
                errors_by_method: r.errors_by_method.into(),
                bandwidth: BandwidthFigures {
                    upload_cap_bytes: r.bandwidth.upload_cap,
                    download_cap_bytes: r.bandwidth.download_cap,
                    upload_wait_micros: r.bandwidth.upload_wait_micros,
                    download_wait_micros: r.bandwidth.download_wait_micros,
                },
            },
            cost: CostFigures {
                requests_dollars: r.cost(put_per_1000, get_per_1000),
                put_price_per_1000: put_per_1000,
                get_price_per_1000: get_per_1000,
                storage_dollars_per_month: None,
                storage_price_per_gb_month: None,
            },
            disk: None,
            stored: None,
        }
    }

    /// Adds the stored figures, with their monthly cost at
    /// `price_per_gb_month` dollars per GB (2^30 bytes).
    pub fn with_stored(mut self, stored: StoredFigures, price_per_gb_month: f64) -> Self {
        self.cost.storage_price_per_gb_month = Some(price_per_gb_month);
        self.cost.storage_dollars_per_month = (stored.source != "failed")
            .then(|| stored.bytes as f64 / (1u64 << 30) as f64 * price_per_gb_month);
        self.stored = Some(stored);
        self
    }

    /// The text of the stats file: a `[cache]` and a `[store requests]`
    /// section, one figure per line, the name in the first 16 columns.
    pub fn render_text(&self) -> String {
        let mut out = String::from("[cache]\n");
        out.push_str(&self.render_cache());
        if let Some(disk) = &self.disk {
            out.push_str("\n[disk cache]\n");
            out.push_str(&disk.render());
        }
        if let Some(stored) = &self.stored {
            out.push_str("\n[stored]\n");
            out.push_str(&stored.render(&self.cost));
        }
        out.push('\n');
        out.push_str(&self.render_requests());
        out
    }

    /// The `[cache]` section's lines (without the heading).
    pub fn render_cache(&self) -> String {
        let (c, r) = (&self.cache, &self.reads);
        let mut out = String::new();
        line(
            &mut out,
            "memory",
            &format!(
                "{} of {} in {} blocks",
                bytes(c.resident_bytes),
                bytes(c.size_bytes),
                count(c.resident_blocks)
            ),
        );
        line(
            &mut out,
            "dirty",
            &format!(
                "{} blocks, {}; {} uploads in flight",
                count(c.dirty_blocks),
                bytes(c.dirty_bytes),
                count(c.uploads_in_flight)
            ),
        );
        line(
            &mut out,
            "known zero",
            &format!("{} blocks, read without a request", count(c.known_zero_blocks)),
        );
        line(&mut out, "reads", &format!("{} block reads, each one of:", count(r.total)));
        noted(&mut out, "  hits", r.hits, "already in memory");
        noted(&mut out, "  read-ahead", r.read_ahead_hits, "first read of a block fetched ahead (a request)");
        noted(&mut out, "  zero blocks", r.zero_hits, "known to be zero");
        noted(&mut out, "  misses", r.misses, "waited for a fetch");
        let w = &r.whole_block;
        parts(
            &mut out,
            "whole fetches",
            "of the misses waited for the whole block, not a part",
            &[
                (w.written, "written"),
                (w.in_flight, "in flight"),
                (w.large, "large"),
                (w.sequential, "sequential"),
                (w.next_block, "next block"),
                (w.dense, "dense"),
            ],
        );
        line(
            &mut out,
            "hit ratio",
            &format!("{:.1}% of reads needed no request (hits and zero blocks)", r.hit_ratio * 100.0),
        );
        line(
            &mut out,
            "fetched ahead",
            &format!(
                "{} blocks, {} of them read",
                count(self.read_ahead.issued),
                count(self.read_ahead.used)
            ),
        );
        noted(&mut out, "fetch waits", r.fetch_waits, "fetches that waited for a free slot");
        let w = &self.write_back;
        line(
            &mut out,
            "write-back",
            &format!(
                "{} blocks stored (a PUT each, a DELETE if now zero), {} retries, {} errors, {} writer waits",
                count(w.blocks_stored),
                count(w.retries),
                count(w.errors),
                count(w.writer_waits)
            ),
        );
        let u = &w.started;
        parts(
            &mut out,
            "uploads",
            "started, retries aside",
            &[
                (u.written_whole, "written whole"),
                (u.delay, "after the write delay"),
                (u.flush, "for a flush"),
                (u.dirty_limit, "over the dirty limit"),
            ],
        );
        noted(
            &mut out,
            "unchanged",
            w.unchanged_writes,
            "writes of bytes the block held already: nothing to upload",
        );
        out
    }

    /// The `[store requests]` section, heading included.
    pub fn render_requests(&self) -> String {
        let q = &self.requests;
        let mut out = String::from("[store requests]\n");
        noted(&mut out, "block fetches", q.block_fetches, "GET of a block a reader waited for");
        noted(&mut out, "read-ahead", q.read_ahead_fetches, "GET of a block ahead of a sequential reader");
        noted(&mut out, "upload fetches", q.upload_fetches, "GET to complete a partly written block");
        noted(&mut out, "block uploads", q.block_uploads, "PUT of a block");
        noted(
            &mut out,
            "block deletes",
            q.block_deletes,
            "DELETE of blocks now zero or discarded (1000 a request)",
        );
        noted(
            &mut out,
            "lock/descriptor",
            q.metadata_gets + q.metadata_puts + q.metadata_deletes,
            &format!(
                "{} GET, {} PUT, {} DELETE of the mount lock, descriptor, probes and block 0's metadata",
                count(q.metadata_gets),
                count(q.metadata_puts),
                count(q.metadata_deletes)
            ),
        );
        noted(&mut out, "lists", q.lists, "LIST pages");
        noted(&mut out, "total", q.total, "the lines above; by method:");
        line(&mut out, "GET", &count(q.gets));
        line(&mut out, "PUT", &count(q.puts));
        noted(&mut out, "DELETE", q.deletes, &format!("deleting {} keys", count(q.keys_deleted)));
        line(&mut out, "LIST", &count(q.lists));
        noted(&mut out, "retries", q.retries, "failed attempts made again (each counted above)");
        noted(&mut out, "errors", q.errors, "requests that finally failed");
        line(&mut out, "bytes sent", &bytes(q.bytes_sent));
        line(&mut out, "bytes received", &bytes(q.bytes_received));
        if let Some(per) = q.fetch_bytes_received.checked_div(q.block_fetches) {
            line(
                &mut out,
                "per fetch",
                &format!(
                    "{} received per block fetch a reader waited for ({} of them ranged)",
                    bytes(per),
                    count(q.ranged_gets)
                ),
            );
        }
        let b = &q.bandwidth;
        for (name, cap, waited) in [
            ("upload cap", b.upload_cap_bytes, b.upload_wait_micros as f64 / 1e6),
            ("download cap", b.download_cap_bytes, b.download_wait_micros as f64 / 1e6),
        ] {
            if cap > 0 {
                line(&mut out, name, &format!("{}/s, waited {waited:.1} s for it", format_size(cap)));
            }
        }
        let l = &q.latency;
        for (name, h) in
            [("GET time", &l.get), ("PUT time", &l.put), ("DELETE time", &l.delete), ("LIST time", &l.list)]
        {
            line(&mut out, name, &h.summary());
        }
        let p = &self.cost;
        line(
            &mut out,
            "request cost",
            &format!(
                "${:.4} (PUT/LIST ${} per 1000, GET ${} per 1000)",
                p.requests_dollars, p.put_price_per_1000, p.get_price_per_1000
            ),
        );
        out
    }
}

/// `name` in 16 columns, then `value`.
fn line(out: &mut String, name: &str, value: &str) {
    let _ = writeln!(out, "{name:<15} {value}");
}

impl DiskFigures {
    /// The `[disk cache]` section's lines (without the heading).
    pub fn render(&self) -> String {
        let mut out = String::new();
        line(
            &mut out,
            "disk",
            &format!(
                "{} of {} in {} blocks",
                bytes(self.used_bytes),
                bytes(self.size_bytes),
                count(self.blocks)
            ),
        );
        line(
            &mut out,
            "durability",
            &match self.durability.as_str() {
                "local" => {
                    "local: fsync returns once the data is on this disk; uploads keep fsync order".to_owned()
                }
                other => format!("{other}: fsync returns once the bucket holds the data"),
            },
        );
        let oldest = match self.oldest_unstored_secs {
            Some(s) => format!(", oldest {s:.1}s"),
            None => String::new(),
        };
        line(
            &mut out,
            "not in bucket",
            &format!(
                "{} blocks, {}{oldest} (lost if this disk is lost)",
                count(self.unstored_blocks),
                bytes(self.unstored_bytes)
            ),
        );
        noted(&mut out, "disk hits", self.hits, "reads served from the disk, no request");
        noted(&mut out, "disk misses", self.misses, "reads passed on to the store");
        noted(&mut out, "uploads", self.uploads, "entries stored in the bucket from the disk");
        noted(&mut out, "spills", self.spills, "writes sent straight to the store (the disk failed)");
        noted(&mut out, "waits", self.waits, "writes that waited for room in the disk cache");
        noted(&mut out, "damaged", self.corrupt_entries, "entries that failed their checksum (never served)");
        line(&mut out, "index", &format!("{} of RAM", bytes(self.index_bytes)));
        out
    }
}

impl StoredFigures {
    /// The `[stored]` section's lines (without the heading), with the cost in `cost`.
    pub fn render(&self, cost: &CostFigures) -> String {
        let mut out = String::new();
        let when = self.baseline_at.as_deref().unwrap_or("an unknown time");
        let listing = match self.listing_millis {
            Some(ms) => format!(
                "{} LIST {}, {:.1}s",
                count(self.listing_requests),
                if self.listing_requests == 1 { "request" } else { "requests" },
                ms as f64 / 1000.0
            ),
            None => String::new(),
        };
        let how = match self.source.as_str() {
            "created" => {
                format!("the volume was created empty at {when}; every block stored since is counted")
            }
            "listing" => format!(
                "partial: the bucket is being listed (started {when}); blocks stored since are counted"
            ),
            "listed" => {
                format!("listed at {when} ({listing}); every block stored or deleted since is counted")
            }
            "unfollowed" => format!("listed or created at {when}, no longer followed"),
            "failed" => "unknown".to_owned(),
            other => other.to_owned(),
        };
        if self.source != "failed" {
            line(&mut out, "objects", &format!("{} blocks, {}", count(self.objects), bytes(self.bytes)));
            if let (Some(dollars), Some(price)) =
                (cost.storage_dollars_per_month, cost.storage_price_per_gb_month)
            {
                line(&mut out, "storage cost", &format!("${dollars:.4} a month (${price} per GB-month)"));
            }
        }
        line(&mut out, "counted", &how);
        if let Some(note) = &self.note {
            line(&mut out, "note", note);
        }
        out
    }
}

/// A total and what it is, then its parts, `{total} {what}: {n} {part}, ...`;
/// no line when the total is 0.
fn parts(out: &mut String, name: &str, what: &str, parts: &[(u64, &str)]) {
    let total: u64 = parts.iter().map(|(n, _)| n).sum();
    if total == 0 {
        return;
    }
    let each: Vec<String> = parts.iter().map(|(n, part)| format!("{} {part}", count(*n))).collect();
    line(out, name, &format!("{} {what}: {}", count(total), each.join(", ")));
}

/// A count in 11 columns after the name, then what it is.
fn noted(out: &mut String, name: &str, n: u64, note: &str) {
    line(out, name, &format!("{:<10} {note}", count(n)));
}

/// `65536` as `65,536 bytes (64K)`; below 1K just the bytes.
/// `65536` as `65,536 bytes (64K)`; the unit only where it is exact, so
/// `324064` is `324,064 bytes`.
fn bytes(n: u64) -> String {
    let exact = format_size(n);
    if exact == n.to_string() {
        format!("{} bytes", count(n))
    } else {
        format!("{} bytes ({exact})", count(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MountStats {
        let cache = CacheStats {
            hits: 6140,
            read_ahead_used: 2048,
            read_ahead_issued: 2074,
            zero_hits: 0,
            misses: 4,
            uploads: 3,
            dirty_bytes: 65_536,
            cache_size: 64 << 20,
            ..Default::default()
        };
        let requests = RequestCounts {
            gets: 2087 + 2,
            block_fetches: 13,
            read_ahead_fetches: 2074,
            metadata_gets: 2,
            puts: 4,
            block_uploads: 3,
            metadata_puts: 1,
            bulk_deletes: 1,
            metadata_deletes: 1,
            deletes: 1,
            lists: 1,
            ..Default::default()
        };
        let mut requests = requests;
        // Four GETs: 3 ms, 8 ms, 9 ms and 20 s.
        requests.latency.get.counts[0] = 1;
        requests.latency.get.counts[1] = 2;
        requests.latency.get.counts[LATENCY_BUCKETS_MS.len()] = 1;
        requests.latency.get.sum_micros = 3_000 + 8_000 + 9_000 + 20_000_000;
        requests.bandwidth.upload_cap = 512 << 10;
        requests.bandwidth.upload_wait_micros = 2_500_000;
        MountStats::new(&cache, &requests, 0.005, 0.0004)
    }

    #[test]
    fn the_text_shows_every_line_and_the_parts_add_up() {
        let s = sample();
        assert_eq!(s.reads.total, 6140 + 2048 + 4);
        assert!((s.reads.hit_ratio - 6140.0 / 8192.0).abs() < 1e-9);
        assert_eq!(s.requests.total, 2089 + 4 + 1 + 1);
        let text = s.render_text();
        assert!(text.starts_with("[cache]\n"), "{text}");
        assert!(text.contains("\n[store requests]\n"), "{text}");
        assert!(text.contains("75.0% of reads needed no request"), "{text}");
        assert!(text.contains("read-ahead      2,074"), "{text}");
        assert!(text.contains("PUT             4\n"), "{text}");
        assert!(text.contains("GET             2,089\n"), "{text}");
        assert!(text.contains("0 blocks, 65,536 bytes (64K)"), "{text}");
        assert!(text.contains("retries         0"), "{text}");
        assert!(
            text.contains("GET time        mean 5005.0 ms, half within 10 ms, 99% within more than 10000 ms (4 requests)\n"),
            "{text}"
        );
        assert!(text.contains("PUT time        no requests\n"), "{text}");
        assert!(text.contains("upload cap      512K/s, waited 2.5 s for it\n"), "{text}");
        assert!(!text.contains("download cap"), "no download cap, no line: {text}");
    }

    #[test]
    fn the_stored_section_says_how_it_was_counted_and_what_it_costs() {
        let listed = StoredFigures {
            source: "listed".into(),
            objects: 4096,
            bytes: 1 << 30,
            baseline_at: Some("20261130T231500Z".into()),
            listing_millis: Some(1500),
            listing_requests: 5,
            note: None,
        };
        let s = sample().with_stored(listed, 0.023);
        assert_eq!(s.cost.storage_dollars_per_month, Some(0.023));
        let text = s.render_text();
        assert!(
            text.contains("\n[stored]\nobjects         4,096 blocks, 1,073,741,824 bytes (1G)\n"),
            "{text}"
        );
        assert!(text.contains("storage cost    $0.0230 a month ($0.023 per GB-month)\n"), "{text}");
        assert!(
            text.contains(
                "listed at 20261130T231500Z (5 LIST requests, 1.5s); every block stored or deleted"
            ),
            "{text}"
        );
        let back: MountStats =
            serde_json::from_str(&serde_json::to_string(&s).unwrap_or_default()).unwrap_or_default();
        assert_eq!(back, s);
        // A failed listing: no figure, no cost, the reason.
        let failed = StoredFigures {
            source: "failed".into(),
            note: Some("the listing failed: store unreachable".into()),
            ..StoredFigures::default()
        };
        let s = sample().with_stored(failed, 0.023);
        assert_eq!(s.cost.storage_dollars_per_month, None);
        let text = s.render_text();
        assert!(!text.contains("storage cost"), "{text}");
        assert!(
            text.contains("counted         unknown\nnote            the listing failed: store unreachable\n"),
            "{text}"
        );
        // Without a stored figure the section and the keys are absent.
        let json = serde_json::to_string(&sample()).unwrap_or_default();
        assert!(!json.contains("\"stored\"") && !json.contains("storage"), "{json}");
        assert!(!sample().render_text().contains("[stored]"));
    }

    #[test]
    fn json_round_trips_with_snake_case_keys() {
        let s = sample();
        let json = serde_json::to_string(&s).unwrap_or_default();
        let back: MountStats = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, s);
        assert!(json.contains("\"read_ahead_fetches\":2074"), "{json}");
        assert!(json.contains("\"bounds_ms\":[5,10,25,"), "{json}");
        assert!(json.contains("\"get\":{\"count\":4,\"sum_micros\":20020000,\"buckets\":[1,2,0,"), "{json}");
        assert!(!json.contains(' '), "{json}");
        // A file written before the histograms reads with empty ones.
        let mut old: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        if let Some(r) = old.get_mut("requests").and_then(|r| r.as_object_mut()) {
            r.remove("latency");
        }
        let back: MountStats = serde_json::from_value(old).unwrap_or_default();
        assert_eq!((back.requests.gets, back.requests.latency), (s.requests.gets, LatencyFigures::default()));
    }
}
