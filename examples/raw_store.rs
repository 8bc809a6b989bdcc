//! The object store's own PUT and GET throughput: the ceiling an s3block
//! mount is measured against.
//!
//! It opens the store the way `s3block-fuse` does (the same `object_store`
//! S3 client, through the same retry and counting layers), PUTs `--count`
//! objects of `--object-size` bytes with `--concurrency` requests in flight,
//! then GETs them back the same way, and deletes them. The data is
//! pseudo-random so no layer can compress it.
//!
//! ```text
//! cargo run --release -p s3block-examples --example raw_store -- \
//!     --endpoint http://127.0.0.1:3900 --force-path-style \
//!     --object-size 1M --count 512 --concurrency 8 s3://bucket/raw/
//! ```
//!
//! Credentials and region come from the `AWS_*` environment. The last line
//! printed is machine-readable: `RESULT put_mbps=... get_mbps=...` in
//! MB/s (10^6 bytes per second).

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
    concurrency: usize,
}

const USAGE: &str = "usage: raw_store [--endpoint URL] [--force-path-style] [--object-size SIZE] \
                     [--count N] [--concurrency N] STORE_URL";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args> {
    let mut out = Args {
        url: String::new(),
        endpoint: None,
        force_path_style: false,
        object_size: 1 << 20,
        count: 256,
        concurrency: 8,
    };
    let mut it = args.into_iter();
    let bad = |opt: &str, v: &str, why: String| Error::Config(format!("{opt} {v:?}: {why}"));
    while let Some(a) = it.next() {
        let mut value =
            |opt: &str| it.next().ok_or_else(|| Error::Config(format!("{opt} needs a value; {USAGE}")));
        match a.as_str() {
            "--endpoint" => out.endpoint = Some(value("--endpoint")?),
            "--force-path-style" => out.force_path_style = true,
            "--object-size" => {
                let v = value("--object-size")?;
                let n = parse_size(&v)?;
                out.object_size = usize::try_from(n)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("--object-size", &v, "must be > 0".into()))?;
            }
            "--count" | "--concurrency" => {
                let v = value(&a)?;
                let n: usize = v.parse().map_err(|e| bad(&a, &v, format!("{e}")))?;
                if n == 0 {
                    return Err(bad(&a, &v, "must be at least 1".into()));
                }
                if a == "--count" {
                    out.count = n;
                } else {
                    out.concurrency = n;
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

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs.max(1e-9) / 1e6
}

async fn run(args: Args) -> Result<()> {
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

    // Payloads are made before the clock starts: only the store is timed.
    let bodies: Vec<Bytes> = (0..args.count).map(|i| payload(args.object_size, i)).collect();
    let start = Instant::now();
    stream::iter(bodies.into_iter().enumerate())
        .map(|(i, body)| {
            let store = store.clone();
            async move { store.put(&key(i), PutPayload::from_bytes(body)).await.map_err(|e| map_err("PUT", i, e)) }
        })
        .buffer_unordered(args.concurrency)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    let put_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let got: u64 = stream::iter(0..args.count)
        .map(|i| {
            let store = store.clone();
            async move {
                let r = store.get(&key(i)).await.map_err(|e| map_err("GET", i, e))?;
                let b = r.bytes().await.map_err(|e| map_err("GET body", i, e))?;
                Ok::<u64, Error>(b.len() as u64)
            }
        })
        .buffer_unordered(args.concurrency)
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
        .await?;
    let get_secs = start.elapsed().as_secs_f64();
    if got != total {
        return Err(Error::Config(format!("read back {got} bytes, wrote {total}")));
    }

    stream::iter(0..args.count)
        .map(|i| {
            let store = store.clone();
            async move { store.delete(&key(i)).await.map_err(|e| map_err("DELETE", i, e)) }
        })
        .buffer_unordered(args.concurrency)
        .try_for_each(|_| async { Ok(()) })
        .await?;

    let counts = opened.counters.snapshot();
    println!(
        "{} objects of {} bytes, {} in flight: PUT {:.1} MB/s ({:.2} s), GET {:.1} MB/s ({:.2} s); {} PUTs, {} GETs, {} retries",
        args.count,
        args.object_size,
        args.concurrency,
        mbps(total, put_secs),
        put_secs,
        mbps(total, get_secs),
        get_secs,
        counts.puts,
        counts.gets,
        counts.retries
    );
    println!("RESULT put_mbps={:.1} get_mbps={:.1}", mbps(total, put_secs), mbps(total, get_secs));
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
    }

    #[test]
    fn payloads_differ_and_have_the_length_asked() {
        let (a, b) = (payload(1000, 0), payload(1000, 1));
        assert_eq!(a.len(), 1000);
        assert_ne!(a, b);
    }
}
