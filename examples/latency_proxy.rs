//! A TCP proxy that adds a fixed one-way delay in each direction (and
//! optionally caps the bandwidth), so the bench can measure s3block against
//! an object store far away on a machine with no `netem`.
//!
//! ```text
//! cargo run --release -p s3block-examples --example latency_proxy -- \
//!     --listen 127.0.0.1:0 --upstream 127.0.0.1:3900 --delay-ms 10 [--rate 100M]
//! ```
//!
//! Every chunk read from one side is written to the other `--delay-ms`
//! after it was read, so a round trip through the proxy takes twice the
//! delay longer. The chunks of a connection are pipelined: each one waits
//! for its own time, not for the chunk before it to be answered, so the
//! throughput of a connection is not one chunk per round trip (a window of
//! data keeps flowing, as on a long link). Bytes keep their order. With
//! `--rate BYTES` (per second each way; suffixes K, M, G) the chunks also
//! queue as on one link of that speed, shared by every connection, as a
//! server's network is: a chunk starts when it was read or when the link
//! is free, whichever is later, and takes its length over the rate.
//!
//! The first line printed is `LISTEN ADDRESS`, the address the proxy
//! accepts on (with `--listen 127.0.0.1:0`, a free port).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use s3block_core::{Error, Result, parse_size};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

/// Most bytes read at once.
const CHUNK: usize = 64 << 10;
/// Chunks held per direction before the reader waits (TCP's own flow
/// control then pushes back on the sender): 64 MiB at most, more than a
/// loopback link moves in a 100 ms round trip.
const QUEUE: usize = 1024;

/// How the proxy runs.
#[derive(Debug, Clone)]
struct Args {
    listen: String,
    upstream: String,
    delay: Duration,
    rate: Option<u64>,
}

const USAGE: &str = "usage: latency_proxy --listen ADDR --upstream ADDR [--delay-ms MS] [--rate BYTES]";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args> {
    let mut out = Args { listen: String::new(), upstream: String::new(), delay: Duration::ZERO, rate: None };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| Error::Config(format!("{a} needs a value; {USAGE}")))?;
        match a.as_str() {
            "--listen" => out.listen = v,
            "--upstream" => out.upstream = v,
            "--delay-ms" => {
                let ms: f64 = v.parse().map_err(|e| Error::Config(format!("--delay-ms {v:?}: {e}")))?;
                if !(0.0..=60_000.0).contains(&ms) {
                    return Err(Error::Config(format!("--delay-ms {v:?}: between 0 and 60000")));
                }
                out.delay = Duration::from_secs_f64(ms / 1e3);
            }
            "--rate" => {
                let bytes = parse_size(&v)?;
                if bytes == 0 {
                    return Err(Error::Config(format!("--rate {v:?}: must be more than 0")));
                }
                out.rate = Some(bytes);
            }
            _ => return Err(Error::Config(format!("unknown option {a}; {USAGE}"))),
        }
    }
    if out.listen.is_empty() || out.upstream.is_empty() {
        return Err(Error::Config(format!("--listen and --upstream are needed; {USAGE}")));
    }
    Ok(out)
}

/// Aborts the task when dropped, so a connection that ends one way never
/// leaves a reader of the other behind.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One direction of a link of `rate` bytes per second, shared by every
/// connection through the proxy.
#[derive(Debug)]
struct Link {
    rate: u64,
    /// When the last chunk given to the link has gone through.
    free: Mutex<Instant>,
}

impl Link {
    fn new(rate: u64) -> Arc<Link> {
        Arc::new(Link { rate, free: Mutex::new(Instant::now()) })
    }

    /// When a chunk of `len` bytes that arrived at `arrived` has gone
    /// through, queued behind every chunk given to the link before it.
    fn carry(&self, arrived: Instant, len: usize) -> Instant {
        let mut free = self.free.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *free = (*free).max(arrived) + Duration::from_secs_f64(len as f64 / self.rate as f64);
        *free
    }
}

/// Both directions of the link, when the bandwidth is capped.
#[derive(Debug, Clone)]
struct Links {
    up: Arc<Link>,
    down: Arc<Link>,
}

impl Links {
    fn new(rate: Option<u64>) -> Option<Links> {
        rate.map(|r| Links { up: Link::new(r), down: Link::new(r) })
    }
}

/// Copies `from` to `to`, writing each chunk `delay` after it was read (and,
/// with a `link`, no sooner than it would have gone through it). Shuts `to`
/// down for writing at the end of `from`. Returns the bytes copied.
async fn pipe<R, W>(mut from: R, mut to: W, delay: Duration, link: Option<Arc<Link>>) -> io::Result<u64>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    // The reader stamps each chunk with when it arrived and moves on at
    // once: the chunks in the queue are the data "on the wire".
    let reader = AbortOnDrop(tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 || tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                return Ok::<(), io::Error>(());
            }
        }
    }));
    let mut copied = 0u64;
    while let Some((arrived, chunk)) = rx.recv().await {
        let sent = match &link {
            Some(link) => link.carry(arrived, chunk.len()),
            None => arrived,
        };
        sleep_until(sent + delay).await;
        to.write_all(&chunk).await?;
        copied += chunk.len() as u64;
    }
    to.shutdown().await?;
    let mut reader = reader;
    (&mut reader.0).await.map_err(io::Error::other)??;
    Ok(copied)
}

/// Serves one client: a connection to the upstream, a delayed pipe each way.
async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    delay: Duration,
    links: Option<Links>,
) -> io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::try_join!(
        pipe(client_read, server_write, delay, links.as_ref().map(|l| l.up.clone())),
        pipe(server_read, client_write, delay, links.map(|l| l.down))
    )?;
    Ok(())
}

/// Accepts clients on `listener` until the task is dropped.
async fn run(
    listener: TcpListener,
    upstream: SocketAddr,
    delay: Duration,
    rate: Option<u64>,
) -> io::Result<()> {
    let links = Links::new(rate);
    loop {
        let (client, _) = listener.accept().await?;
        let links = links.clone();
        tokio::spawn(async move {
            // A connection reset by either side ends only that connection.
            let _ = serve(client, upstream, delay, links).await;
        });
    }
}

async fn start(args: Args) -> Result<()> {
    let upstream = tokio::net::lookup_host(&args.upstream)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::Config(format!("--upstream {:?}: not an address", args.upstream)))?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Error::Config(format!("--listen {:?}: {e}", args.listen)))?;
    let addr = listener.local_addr().map_err(|e| Error::Config(format!("--listen: {e}")))?;
    println!("LISTEN {addr}");
    eprintln!(
        "latency_proxy: {addr} -> {upstream}, {:?} each way{}",
        args.delay,
        args.rate.map_or(String::new(), |r| format!(", a link of {r} bytes/s each way"))
    );
    run(listener, upstream, args.delay, args.rate).await.map_err(|e| Error::Config(format!("accept: {e}")))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let result = match parse_args(std::env::args().skip(1)) {
        Ok(args) => start(args).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("latency_proxy: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy on a free port in front of an echo server; returns the
    /// proxy's address.
    async fn proxy_to_echo(delay: Duration, rate: Option<u64>) -> SocketAddr {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = proxy.local_addr().unwrap();
        tokio::spawn(run(proxy, echo_addr, delay, rate));
        addr
    }

    /// Sends `data` down `s`, shuts it for writing, and returns what came
    /// back until the other end closed.
    async fn through(s: TcpStream, data: Vec<u8>) -> Vec<u8> {
        let (mut r, mut w) = s.into_split();
        let writer = tokio::spawn(async move {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        back
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_round_trip_takes_twice_the_delay_and_bytes_arrive_intact_in_order() {
        let delay = Duration::from_millis(40);
        let addr = proxy_to_echo(delay, None).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        // One small message: a full round trip, two delays.
        let t0 = Instant::now();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        let rtt = t0.elapsed();
        assert_eq!(&buf, b"ping");
        assert!(rtt >= 2 * delay, "round trip {rtt:?}, less than twice {delay:?}");
        assert!(rtt < 2 * delay + Duration::from_millis(200), "round trip {rtt:?}");
        // Four MiB through it and back: same bytes, same order.
        let data = pattern(4 << 20);
        let back = through(s, data.clone()).await;
        assert_eq!(back.len(), data.len());
        assert!(back == data, "the bytes came back changed or out of order");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_are_pipelined_not_one_per_round_trip() {
        let delay = Duration::from_millis(50);
        let addr = proxy_to_echo(delay, None).await;
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let (mut r, mut w) = s.into_split();
        // Twenty writes 10 ms apart: sent over 190 ms; each comes back 100 ms
        // after it left, so all are back by about 290 ms. One per round trip
        // would take 2 s.
        let t0 = Instant::now();
        let writer = tokio::spawn(async move {
            for i in 0..20u8 {
                w.write_all(&[i; 100]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            w.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        let took = t0.elapsed();
        writer.await.unwrap();
        let want: Vec<u8> = (0..20u8).flat_map(|i| [i; 100]).collect();
        assert_eq!(back, want);
        assert!(took >= Duration::from_millis(290), "{took:?}: the delay was not applied");
        assert!(took < Duration::from_millis(900), "{took:?}: the chunks waited for each other");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_rate_caps_the_throughput() {
        // 2 MiB each way at 8 MiB/s: at least a quarter of a second.
        let addr = proxy_to_echo(Duration::ZERO, Some(8 << 20)).await;
        let s = TcpStream::connect(addr).await.unwrap();
        let data = pattern(2 << 20);
        let t0 = Instant::now();
        let back = through(s, data.clone()).await;
        let took = t0.elapsed();
        assert!(back == data);
        assert!(took >= Duration::from_millis(240), "{took:?}: faster than the rate");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_share_the_rate() {
        // Two connections of 1 MiB each way at 8 MiB/s: the link carries
        // 2 MiB each way, at least a quarter of a second (one connection
        // alone would take an eighth).
        let addr = proxy_to_echo(Duration::ZERO, Some(8 << 20)).await;
        let t0 = Instant::now();
        let echo = |seed: usize| async move {
            let s = TcpStream::connect(addr).await.unwrap();
            let data = pattern((1 << 20) + seed);
            assert!(through(s, data.clone()).await == data);
        };
        tokio::join!(echo(0), echo(1));
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(240), "{took:?}: the connections each had the whole rate");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[test]
    fn options_are_checked() {
        let a = parse_args(
            ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:3900", "--delay-ms", "2.5", "--rate", "10M"]
                .map(String::from),
        )
        .unwrap();
        assert_eq!((a.delay, a.rate), (Duration::from_micros(2500), Some(10 << 20)));
        assert!(parse_args(["--listen", "x"].map(String::from)).is_err(), "no upstream");
        assert!(
            parse_args(["--listen", "a", "--upstream", "b", "--delay-ms", "-1"].map(String::from)).is_err()
        );
        assert!(parse_args(["--listen", "a", "--upstream", "b", "--rate", "0"].map(String::from)).is_err());
        assert!(parse_args(["--bogus", "1"].map(String::from)).is_err());
    }
}
