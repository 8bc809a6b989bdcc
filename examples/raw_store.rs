//! The object store's own PUT and GET throughput: the ceiling an s3block
//! mount is measured against.
//!
//! It opens the store the way `s3block-fuse` does (the same `object_store`
//! S3 client, through the same retry and counting layers), PUTs `--count`
//! objects of `--object-size` bytes with `--concurrency` requests in flight,
//! then GETs them back the same way, and deletes them. The concurrency
//! defaults to what an s3block mount keeps in flight at that block size
//! (`s3block_cache::default_requests_in_flight`: 64 at 4K, 16 at 256K and
//! 1M), so the ceiling is measured on the same terms. The data is
//! pseudo-random so no layer can compress it.
//!
//! Between the two it also GETs up to `--single-gets` of the objects one at a
//! time, in a scattered order: the rate a reader gets when it waits for each
//! block before asking for the next, as random 4K reads that miss the cache
//! do. No block device that fetches whole blocks can beat that rate at one
//! request in flight.
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
//! ```text
//! cargo run --release -p s3block-examples --example raw_store -- \
//!     --endpoint http://127.0.0.1:3900 --force-path-style \
//!     --object-size 1M --count 512 s3://bucket/raw/
//! ```
//!
//! Credentials and region come from the `AWS_*` environment. The last line
//! printed is machine-readable: `RESULT put_mbps=... get_mbps=...
//! single_get_ops=... in_flight=...`, the first two in MB/s (10^6 bytes per
//! second), then GETs per second one at a time, then the requests in flight.

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
    cold: bool,
    /// The store server's process, to wait for before the GETs.
    settle_pid: Option<u32>,
}

const USAGE: &str = "usage: raw_store [--endpoint URL] [--force-path-style] [--object-size SIZE] \
                     [--count N] [--concurrency N] [--single-gets N] [--cold] \
                     [--settle-pid PID] STORE_URL";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args> {
    let mut out = Args {
        url: String::new(),
        endpoint: None,
        force_path_style: false,
        object_size: 1 << 20,
        count: 256,
        concurrency: None,
        single_gets: 1000,
        cold: false,
        settle_pid: None,
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
            "--settle-pid" => {
                let v = value("--settle-pid")?;
                out.settle_pid = Some(v.parse().map_err(|e| bad("--settle-pid", &v, format!("{e}")))?);
            }
            "--object-size" => {
                let v = value("--object-size")?;
                let n = parse_size(&v)?;
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
        s3block_cache::default_requests_in_flight(u32::try_from(args.object_size).unwrap_or(u32::MAX))
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

    let start = Instant::now();
    let mut single = 0usize;
    for i in scattered(args.count, args.single_gets) {
        let len = get_len(i).await?;
        if len != args.object_size {
            return Err(Error::Config(format!(
                "{} read back {len} bytes, wrote {}",
                key(i),
                args.object_size
            )));
        }
        single += 1;
    }
    let single_secs = start.elapsed().as_secs_f64();
    let single_ops = single as f64 / single_secs.max(1e-9);

    stream::iter(0..args.count)
        .map(|i| {
            let store = store.clone();
            async move { store.delete(&key(i)).await.map_err(|e| map_err("DELETE", i, e)) }
        })
        .buffer_unordered(concurrency)
        .try_for_each(|_| async { Ok(()) })
        .await?;

    let counts = opened.counters.snapshot();
    let single_part = if single == 0 {
        String::new()
    } else {
        format!(
            "; one at a time: {single} GETs, {single_ops:.0} per second ({:.2} ms each)",
            single_secs * 1e3 / single as f64
        )
    };
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
        "RESULT put_mbps={:.1} get_mbps={:.1} single_get_ops={single_ops:.0} in_flight={concurrency}",
        mbps(total, put_secs),
        mbps(total, get_secs)
    );
    // A reader that closed the pipe early (`| head -1`) is not a failure of the store.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{summary}").and_then(|()| writeln!(out, "{result}"));
    Ok(())
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
        assert!(parse_args(["--settle-pid", "garage", "s3://b/"].map(String::from)).is_err());
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
        assert_eq!((at("4K"), at("256K"), at("1M")), (64, 16, 16));
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
