//! Arbitrary bytes from a client, in the handshake and after it: the
//! server answers or closes that connection, never panics, never holds more
//! than its bounds, and keeps serving a well-behaved client beside it.
//!
//! Each case sends its bytes on one connection while another connection,
//! connected before, keeps writing and reading; the fuzzed connection must
//! end (the server closes it, or it waits for more bytes and ends when the
//! client hangs up) and the other must still work. Requests made of
//! arbitrary fields (command, flags, offset, length) after a valid
//! handshake are also tried, with and without structured replies.

mod common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;
use s3block_nbd::proto::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::timeout;

const SOON: Duration = Duration::from_secs(20);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Reads and drops whatever the server sends until it closes.
async fn drain(mut s: impl tokio::io::AsyncRead + Unpin) {
    let mut buf = vec![0; 64 << 10];
    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
}

async fn bystander_works(b: &mut Client<DuplexStream>, seed: u8) {
    let data = pattern(seed, 1000);
    assert_eq!(b.write(8192, &data).await, 0, "the other connection's write failed");
    assert_eq!(b.read(8192, 1000).await, Ok(data), "the other connection's read failed");
}

/// Sends `bytes` on a fresh connection (after the greeting when `greeted`),
/// hangs up, and checks the server ended that connection without a panic
/// while `bystander` still works.
async fn feed(bytes: Vec<u8>, greeted: bool) {
    let server = server_of(memory());
    let (b, _tb) = pipe(&server);
    let mut bystander = connect(b, Want { structured: true, ..Want::default() }).await;
    let (mut a, ta) = pipe(&server);
    if greeted {
        greet(&mut a, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).await;
    }
    let (reader, mut writer) = tokio::io::split(a);
    let sink = tokio::spawn(drain(reader));
    // The server may close before reading everything: a failed write is fine.
    let _ = writer.write_all(&bytes).await;
    let _ = writer.shutdown().await;
    drop(writer);
    let ended = timeout(SOON, ta).await.expect("the fuzzed connection did not end");
    assert!(ended.is_ok(), "the connection's task panicked: {ended:?}");
    let _ = timeout(SOON, sink).await;
    bystander_works(&mut bystander, bytes.first().copied().unwrap_or(1)).await;
}

/// A request made of arbitrary fields after a valid handshake; the
/// connection either answers it (an error or data) or closes.
async fn request(kind: u16, flags: u16, offset: u64, len: u32, payload: Vec<u8>, structured: bool) {
    let server = server_of(memory());
    let (b, _tb) = pipe(&server);
    let mut bystander = connect(b, Want { structured: true, ..Want::default() }).await;
    let (a, ta) = pipe(&server);
    let mut client = connect(a, Want { structured, ..Want::default() }).await;
    let header = Request { flags, kind, cookie: 7, offset, len }.encode();
    let _ = client.s.write_all(&header).await;
    let _ = client.s.write_all(&payload).await;
    let _ = client.s.shutdown().await;
    drain(client.s).await;
    let ended = timeout(SOON, ta).await.expect("the connection did not end after the client hung up");
    assert!(ended.is_ok(), "the connection's task panicked: {ended:?}");
    bystander_works(&mut bystander, kind as u8).await;
}

/// Bytes that look like option haggling: the option magic, then arbitrary
/// option numbers and lengths, so the parser behind the magic is reached.
fn option_like() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((any::<u32>(), 0u32..2048, prop::collection::vec(any::<u8>(), 0..64)), 1..6)
        .prop_map(|options| {
            let mut out = Vec::new();
            for (option, len, data) in options {
                out.extend_from_slice(&IHAVEOPT.to_be_bytes());
                out.extend_from_slice(&(option % 16).to_be_bytes());
                out.extend_from_slice(&len.min(data.len() as u32 + 8).to_be_bytes());
                out.extend_from_slice(&data);
            }
            out
        })
}

/// `n` cases, or `PROPTEST_CASES` of them for a longer search.
fn cases(n: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(96), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_instead_of_a_handshake(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        runtime().block_on(feed(bytes, false));
    }

    #[test]
    fn arbitrary_options_after_the_greeting(
        flags in any::<u32>(),
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..300), option_like()],
    ) {
        let mut all = flags.to_be_bytes().to_vec();
        all.extend(bytes);
        runtime().block_on(async move {
            // The client flags are sent by `greet`; these replace them.
            let server = server_of(memory());
            let (b, _tb) = pipe(&server);
            let mut bystander = connect(b, Want { structured: true, ..Want::default() }).await;
            let (mut a, ta) = pipe(&server);
            let mut greeting = [0u8; 18];
            a.read_exact(&mut greeting).await.expect("greeting");
            let _ = a.write_all(&all).await;
            let _ = a.shutdown().await;
            drain(a).await;
            let ended = timeout(SOON, ta).await.expect("the connection did not end");
            assert!(ended.is_ok(), "the connection's task panicked: {ended:?}");
            bystander_works(&mut bystander, 3).await;
        });
    }

    #[test]
    fn arbitrary_requests_after_a_handshake(
        kind in prop_oneof![0u16..12, any::<u16>()],
        flags in any::<u16>(),
        offset in prop_oneof![0u64..(BLOCKS * u64::from(BS) + 8192), any::<u64>()],
        len in prop_oneof![0u32..70_000, any::<u32>()],
        payload in prop::collection::vec(any::<u8>(), 0..2048),
        structured in any::<bool>(),
    ) {
        runtime().block_on(request(kind, flags, offset, len, payload, structured));
    }

    #[test]
    fn arbitrary_bytes_after_the_greeting(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        runtime().block_on(feed(bytes, true));
    }
}
