//! The object store's own PUT and GET throughput: the ceiling an s3block
//! mount is measured against.
//!
//! It opens the store the way `s3block-fuse` does (the same `object_store`
//! S3 client, through the same retry and counting layers), PUTs `--count`
//! objects of `--object-size` bytes with `--concurrency` requests in flight,
//! then GETs them back the same way, and deletes them. The concurrency
//! defaults to what an s3block mount keeps in flight at that block size
//! (`s3block_cache::default_requests_in_flight` with the default cache: 64 at
//! 4K, 32 at 256K, 16 at 1M), so the ceiling is measured on the same terms. The data is
//! pseudo-random so no layer can compress it.
//!
//! Between the two it also GETs up to `--single-gets` of the objects one at a
//! time, in a scattered order: the rate a reader gets when it waits for each
//! block before asking for the next, as random 4K reads that miss the cache
//! do. No block device that fetches whole blocks can beat that rate at one
//! request in flight.
//!
//! With `--single-range SIZE` it then GETs as many ranges of SIZE bytes, one
//! at a time, each at an aligned offset in a different object: the rate a
//! reader gets when each cache miss fetches that much of a block, as
//! s3block's ranged reads do. Both one-at-a-time passes print their
//! latencies (50th, 90th and 99th percentiles).
//!
//! With `--cold` it syncs and drops the page cache between the PUTs and the
//! GETs (Linux, as root), so a server on the same machine reads the objects
//! from disk, as it does for a cold read of a mounted volume. The one-at-a-time
//! GETs come after the others and find the objects cached again, as random
//! reads that follow a sequential read do.
//!
//! With `--settle-pid PID` (the store's server, on this machine) it waits
//! before the GETs until that process has used under 5% of a CPU for a whole
//! second (at most a minute). A server may go on working for seconds after a
//! burst of writes: Garage (by a profile, updating its tables' Merkle trees)
//! spent 5.4 CPU seconds in the 5 s after 32,768 PUTs, GETs and DELETEs of
//! 4 KiB. The GETs then measure the store's reads, not the tail of its
//! writes.
//!
//! With `--keep` the objects stay in the store instead of being deleted at
//! the end.
//!
//! ```text
//! cargo run --release -p s3block-examples --example raw_store -- \
//!     --endpoint http://127.0.0.1:3900 --force-path-style \
//!     --object-size 1M --count 512 s3://bucket/raw/
//! ```
//!
//! Credentials and region come from the `AWS_*` environment. The last line
//! printed is machine-readable: `RESULT put_mbps=... get_mbps=...
//! single_get_ops=... in_flight=... single_get_p50_ms=... single_range_ops=...
//! single_range_p50_ms=... single_range_p90_ms=...`: the first two in MB/s
//! (10^6 bytes per second), then GETs per second one at a time, the requests
//! in flight, the median one-at-a-time GET, and the same for the ranged
//! GETs (0 without `--single-range`).

use std::io::Write;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use s3block_core::{Error, Result, parse_size};
use s3block_store::StoreConfig;

/// What to measure.
#[derive(Debug)]
struct Args {
    url: String,
    endpoint: Option<String>,
    force_path_style: bool,
    object_size: usize,
    count: usize,
    /// `None`: as many as s3block keeps in flight at `object_size`.
    concurrency: Option<usize>,
    single_gets: usize,
    /// Bytes of each one-at-a-time ranged GET; 0: none.
    single_range: usize,
    cold: bool,
    /// The store server's process, to wait for before the GETs.
    settle_pid: Option<u32>,
    /// Leave the objects in the store instead of deleting them.
    keep: bool,
}

const USAGE: &str = "usage: raw_store [--endpoint URL] [--force-path-style] [--object-size SIZE] \
                     [--count N] [--concurrency N] [--single-gets N] [--single-range SIZE] [--cold] \
                     [--settle-pid PID] [--keep] STORE_URL";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args> {
    let mut out = Args {
        url: String::new(),
        endpoint: None,
        force_path_style: false,
        object_size: 1 << 20,
        count: 256,
        concurrency: None,
        single_gets: 1000,
        single_range: 0,
        cold: false,
        settle_pid: None,
        keep: false,
    };
    let mut it = args.into_iter();
    let bad = |opt: &str, v: &str, why: String| Error::Config(format!("{opt} {v:?}: {why}"));
    while let Some(a) = it.next() {
        let mut value =
            |opt: &str| it.next().ok_or_else(|| Error::Config(format!("{opt} needs a value; {USAGE}")));
        match a.as_str() {
            "--endpoint" => out.endpoint = Some(value("--endpoint")?),
            "--force-path-style" => out.force_path_style = true,
            "--cold" => out.cold = true,
            "--keep" => out.keep = true,
            "--settle-pid" => {
                let v = value("--settle-pid")?;
                out.settle_pid = Some(v.parse().map_err(|e| bad("--settle-pid", &v, format!("{e}")))?);
            }
            "--single-range" => {
                let v = value("--single-range")?;
                let n = parse_size(&v).map_err(|e| bad("--single-range", &v, e.to_string()))?;
                out.single_range = usize::try_from(n)
                    .map_err(|_| bad("--single-range", &v, "too large for this machine".into()))?;
            }
            "--object-size" => {
                let v = value("--object-size")?;
                let n = parse_size(&v).map_err(|e| bad("--object-size", &v, e.to_string()))?;
                out.object_size = usize::try_from(n)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("--object-size", &v, "must be > 0".into()))?;
            }
            "--count" | "--concurrency" | "--single-gets" => {
                let v = value(&a)?;
                let n: usize = v.parse().map_err(|e| bad(&a, &v, format!("{e}")))?;
                match a.as_str() {
                    "--single-gets" => out.single_gets = n,
                    _ if n == 0 => return Err(bad(&a, &v, "must be at least 1".into())),
                    "--count" => out.count = n,
                    _ => out.concurrency = Some(n),
                }
            }
            s if s.starts_with("--") => return Err(Error::Config(format!("unknown option {s}; {USAGE}"))),
            _ if out.url.is_empty() => out.url = a,
            _ => return Err(Error::Config(format!("unexpected argument {a:?}; {USAGE}"))),
        }
    }
    if out.url.is_empty() {
        return Err(Error::Config(format!("no store URL; {USAGE}")));
    }
    if out.single_range >= out.object_size {
        return Err(Error::Config(format!(
            "--single-range {}: must be less than --object-size ({})",
            out.single_range, out.object_size
        )));
    }
    Ok(out)
}

/// Incompressible bytes for object `i`, seeded by the index.
fn payload(len: usize, i: usize) -> Bytes {
    s3block_examples::incompressible(len, 0x9e37_79b9_7f4a_7c15_u64 ^ (i as u64 + 1))
}

/// `n` of the indexes `0..count`, each at most once, in a scattered order:
/// a stride through them that is coprime with `count` visits each once.
fn scattered(count: usize, n: usize) -> impl Iterator<Item = usize> {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let stride = (count * 5 / 8 + 1..).find(|s| gcd(*s, count) == 1).unwrap_or(1);
    (0..n.min(count)).map(move |i| i * stride % count)
}

/// Writes dirty pages out, then asks the kernel to drop its clean page cache.
fn drop_page_cache() -> Result<()> {
    const DROP: &str = "/proc/sys/vm/drop_caches";
    let synced = std::process::Command::new("sync").status();
    if !synced.as_ref().is_ok_and(|s| s.success()) {
        return Err(Error::Config(format!("--cold: sync failed: {synced:?}")));
    }
    std::fs::write(DROP, "3")
        .map_err(|e| Error::Config(format!("--cold: cannot write {DROP} (needs root): {e}")))
}

/// CPU seconds process `pid` has used so far (user + system), from
/// `/proc/PID/stat` in the kernel's user-visible clock ticks (100 a second).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat =
        std::fs::read_to_string(&path).map_err(|e| Error::Config(format!("--settle-pid: {path}: {e}")))?;
    // The command name (field 2) may hold spaces; the fields after it are
    // numbers: state is field 3, utime 14, stime 15.
    let after_name = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(user), Some(system)) => Ok((user + system) as f64 / 100.0),
        _ => Err(Error::Config(format!("--settle-pid: {path}: no CPU times in {stat:?}"))),
    }
}

/// Waits until process `pid` has used under 5% of a CPU for a whole second,
/// at most a minute; returns the seconds waited and whether it settled.
async fn settle(pid: u32) -> Result<(f64, bool)> {
    let start = Instant::now();
    for _ in 0..60 {
        let before = cpu_seconds(pid)?;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if cpu_seconds(pid)? - before < 0.05 {
            return Ok((start.elapsed().as_secs_f64(), true));
        }
    }
    Ok((start.elapsed().as_secs_f64(), false))
}

/// Requests in flight: `--concurrency`, else what an s3block mount keeps in
/// flight at this block size (its uploads at once and its read-ahead).
fn in_flight(args: &Args) -> usize {
    args.concurrency.unwrap_or_else(|| {
        let size = u32::try_from(args.object_size).unwrap_or(u32::MAX);
        s3block_cache::default_requests_in_flight(size, s3block_cache::DEFAULT_CACHE_SIZE)
    })
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs.max(1e-9) / 1e6
}

async fn run(args: Args) -> Result<()> {
    let concurrency = in_flight(&args);
    let mut config = StoreConfig::new(&args.url).force_path_style(args.force_path_style);
    if let Some(ep) = &args.endpoint {
        config = config.endpoint(ep);
    }
    let opened = config.open()?;
    let store = opened.store.clone();
    let key = |i: usize| Path::from(format!("{}raw-{i:08x}", opened.prefix));
    let total = (args.object_size * args.count) as u64;
    let map_err = |what: &str, i: usize, e: object_store::Error| {
        Error::Config(format!("{what} of {} failed: {e}", key(i)))
    };
    // The length of object `i`, read whole.
    let get_len = |i: usize| {
        let store = store.clone();
        async move {
            let r = store.get(&key(i)).await.map_err(|e| map_err("GET", i, e))?;
            let b = r.bytes().await.map_err(|e| map_err("GET body", i, e))?;
            Ok::<usize, Error>(b.len())
        }
    };

    // Payloads are made before the clock starts: only the store is timed.
    let bodies: Vec<Bytes> = (0..args.count).map(|i| payload(args.object_size, i)).collect();
    let start = Instant::now();
    stream::iter(bodies.into_iter().enumerate())
        .map(|(i, body)| {
            let store = store.clone();
            async move { store.put(&key(i), PutPayload::from_bytes(body)).await.map_err(|e| map_err("PUT", i, e)) }
        })
        .buffer_unordered(concurrency)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    let put_secs = start.elapsed().as_secs_f64();
    if args.cold {
        drop_page_cache()?;
    }
    let settled = match args.settle_pid {
        Some(pid) => Some(settle(pid).await?),
        None => None,
    };

    let start = Instant::now();
    let got: u64 = stream::iter(0..args.count)
        .map(get_len)
        .buffer_unordered(concurrency)
        .try_fold(0u64, |acc, n| async move { Ok(acc + n as u64) })
        .await?;
    let get_secs = start.elapsed().as_secs_f64();
    if got != total {
        return Err(Error::Config(format!("read back {got} bytes, wrote {total}")));
    }

    let mut single_ms = Vec::with_capacity(args.single_gets.min(args.count));
    let start = Instant::now();
    for i in scattered(args.count, args.single_gets) {
        let began = Instant::now();
        let len = get_len(i).await?;
        single_ms.push(began.elapsed().as_secs_f64() * 1e3);
        if len != args.object_size {
            return Err(Error::Config(format!(
                "{} read back {len} bytes, wrote {}",
                key(i),
                args.object_size
            )));
        }
    }
    let single_ops = single_ms.len() as f64 / start.elapsed().as_secs_f64().max(1e-9);
    single_ms.sort_by(f64::total_cmp);

    // One ranged GET at a time, each of `single_range` bytes at an aligned
    // offset that moves around the objects: the most a reader that fetches
    // that much per cache miss gets at one request in flight.
    let mut range_ms = Vec::with_capacity(args.single_gets.min(args.count));
    let start = Instant::now();
    let mut checked = None;
    if let Some(slots) = args.object_size.checked_div(args.single_range) {
        for (n, i) in scattered(args.count, args.single_gets).enumerate() {
            let offset = (n * 7 + i) % slots * args.single_range;
            let range = offset as u64..(offset + args.single_range) as u64;
            let began = Instant::now();
            let part = store.get_range(&key(i), range).await.map_err(|e| map_err("ranged GET", i, e))?;
            range_ms.push(began.elapsed().as_secs_f64() * 1e3);
            if part.len() != args.single_range {
                return Err(Error::Config(format!(
                    "{} at {offset}: read back {} bytes, asked for {}",
                    key(i),
                    part.len(),
                    args.single_range
                )));
            }
            checked.get_or_insert((i, offset, part));
        }
    }
    let range_ops = range_ms.len() as f64 / start.elapsed().as_secs_f64().max(1e-9);
    range_ms.sort_by(f64::total_cmp);
    // One range is compared with what was written, after the clock stopped.
    if let Some((i, offset, part)) = checked
        && payload(args.object_size, i)[offset..offset + part.len()] != part[..]
    {
        return Err(Error::Config(format!(
            "{} at {offset}: the range read back differs from what was written",
            key(i)
        )));
    }

    if !args.keep {
        stream::iter(0..args.count)
            .map(|i| {
                let store = store.clone();
                async move { store.delete(&key(i)).await.map_err(|e| map_err("DELETE", i, e)) }
            })
            .buffer_unordered(concurrency)
            .try_for_each(|_| async { Ok(()) })
            .await?;
    }

    let counts = opened.counters.snapshot();
    let single_part = one_at_a_time("GETs", &single_ms, single_ops)
        + &one_at_a_time(&format!("GETs of {} bytes", args.single_range), &range_ms, range_ops);
    let settle_part = match settled {
        None => String::new(),
        Some((secs, true)) => format!(", the server settled in {secs:.0} s"),
        Some((secs, false)) => format!(", the server still busy after {secs:.0} s"),
    };
    let summary = format!(
        "{} objects of {} bytes, {} in flight: PUT {:.1} MB/s ({:.2} s){settle_part}, GET{} {:.1} MB/s ({:.2} s){single_part}; \
         {} PUTs, {} GETs, {} retries",
        args.count,
        args.object_size,
        concurrency,
        mbps(total, put_secs),
        put_secs,
        if args.cold { " (cold)" } else { "" },
        mbps(total, get_secs),
        get_secs,
        counts.puts,
        counts.gets,
        counts.retries
    );
    let result = format!(
        "RESULT put_mbps={:.1} get_mbps={:.1} single_get_ops={single_ops:.0} in_flight={concurrency} \
         single_get_p50_ms={:.2} single_range_ops={range_ops:.0} single_range_p50_ms={:.2} single_range_p90_ms={:.2}",
        mbps(total, put_secs),
        mbps(total, get_secs),
        percentile(&single_ms, 0.5),
        percentile(&range_ms, 0.5),
        percentile(&range_ms, 0.9),
    );
    // A reader that closed the pipe early (`| head -1`) is not a failure of the store.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{summary}").and_then(|()| writeln!(out, "{result}"));
    Ok(())
}

/// The `q` quantile (0 to 1) of the sorted `ms`, nearest rank; 0 when empty.
fn percentile(ms: &[f64], q: f64) -> f64 {
    if ms.is_empty() {
        return 0.0;
    }
    let rank = ((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len());
    ms[rank - 1]
}

/// "; one at a time: N WHAT, R per second (p50 .., p90 .., p99 .. ms)"
/// of the sorted `ms`, or nothing when there were none.
fn one_at_a_time(what: &str, ms: &[f64], ops: f64) -> String {
    if ms.is_empty() {
        return String::new();
    }
    format!(
        "; one at a time: {} {what}, {ops:.0} per second (p50 {:.2}, p90 {:.2}, p99 {:.2} ms)",
        ms.len(),
        percentile(ms, 0.5),
        percentile(ms, 0.9),
        percentile(ms, 0.99)
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let result = match parse_args(std::env::args().skip(1)) {
        Ok(args) => run(args).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("raw_store: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_and_rejects_zero() {
        let a = parse_args(["--object-size", "64K", "--count", "3", "s3://b/p/"].map(String::from))
            .expect("args");
        assert_eq!((a.object_size, a.count, a.url.as_str()), (65536, 3, "s3://b/p/"));
        assert!(parse_args(["--count", "0", "s3://b/"].map(String::from)).is_err());
        assert!(parse_args(["--bogus".to_owned()]).is_err());
        let a = parse_args(["--single-gets", "0", "s3://b/"].map(String::from)).expect("args");
        assert_eq!((a.single_gets, a.count), (0, 256), "no single GETs is allowed");
        let a = parse_args(["--settle-pid", "42", "s3://b/"].map(String::from)).expect("args");
        assert_eq!(a.settle_pid, Some(42));
        assert!(!a.keep);
        assert!(parse_args(["--keep", "s3://b/"].map(String::from)).expect("args").keep);
        assert!(parse_args(["--settle-pid", "garage", "s3://b/"].map(String::from)).is_err());
        let a = parse_args(["--object-size", "1M", "--single-range", "64K", "s3://b/"].map(String::from))
            .expect("args");
        assert_eq!(a.single_range, 65536);
        let err = parse_args(["--object-size", "64K", "--single-range", "64K", "s3://b/"].map(String::from))
            .expect_err("a range as large as the object")
            .to_string();
        assert!(err.contains("--single-range 65536"), "{err}");
        // A bad size names the option and says what is wrong with it.
        for opt in ["--single-range", "--object-size"] {
            let err =
                parse_args([opt, "64Q", "s3://b/"].map(String::from)).expect_err("a bad unit").to_string();
            assert!(err.contains(&format!("{opt} \"64Q\"")) && err.contains("unit"), "{err}");
        }
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let ms: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!((percentile(&ms, 0.5), percentile(&ms, 0.9), percentile(&ms, 0.99)), (50.0, 90.0, 99.0));
        assert_eq!((percentile(&[7.0], 0.99), percentile(&[], 0.5)), (7.0, 0.0));
        assert_eq!(one_at_a_time("GETs", &[], 0.0), "");
        let line = one_at_a_time("GETs", &ms, 12.0);
        assert!(line.contains("100 GETs, 12 per second (p50 50.00, p90 90.00, p99 99.00 ms)"), "{line}");
    }

    #[tokio::test]
    async fn a_run_with_ranges_reads_back_what_it_wrote() {
        let args = parse_args(
            [
                "--object-size",
                "256K",
                "--count",
                "8",
                "--single-gets",
                "5",
                "--single-range",
                "64K",
                "memory://",
            ]
            .map(String::from),
        )
        .expect("args");
        run(args).await.expect("PUTs, GETs, ranged GETs and DELETEs on a memory store");
    }

    #[test]
    fn a_process_cpu_time_is_read_and_a_missing_one_is_an_error() {
        let own = cpu_seconds(std::process::id()).expect("this process's stat");
        assert!(own >= 0.0);
        let mut spent = 0u64;
        let start = Instant::now();
        while start.elapsed().as_millis() < 300 {
            spent = spent.wrapping_add(std::hint::black_box(spent) | 1);
        }
        assert!(cpu_seconds(std::process::id()).unwrap() > own, "300 ms of spinning shows ({spent})");
        let err = cpu_seconds(u32::MAX).expect_err("no such process").to_string();
        assert!(err.contains("/proc/4294967295/stat"), "{err}");
    }

    #[test]
    fn the_concurrency_defaults_to_s3blocks_at_the_object_size() {
        let at = |size: &str| {
            in_flight(&parse_args(["--object-size", size, "s3://b/"].map(String::from)).unwrap())
        };
        assert_eq!((at("4K"), at("256K"), at("1M")), (64, 32, 16));
        let a =
            parse_args(["--object-size", "4K", "--concurrency", "3", "s3://b/"].map(String::from)).unwrap();
        assert_eq!(in_flight(&a), 3, "an explicit count wins");
    }

    #[test]
    fn scattered_visits_each_index_at_most_once() {
        for (count, n) in [(1, 5), (8, 8), (512, 512), (8192, 1000), (10, 3)] {
            let v: Vec<usize> = scattered(count, n).collect();
            assert_eq!(v.len(), n.min(count));
            let mut sorted = v.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), v.len(), "{count}/{n}: {v:?}");
            assert!(v.iter().all(|i| *i < count));
            if count > 2 && n > 2 {
                assert_ne!(v[1], v[0] + 1, "{count}: not in order");
            }
        }
    }

    #[test]
    fn payloads_differ_and_have_the_length_asked() {
        let (a, b) = (payload(1000, 0), payload(1000, 1));
        assert_eq!(a.len(), 1000);
        assert_ne!(a, b);
    }
}
