//! Protocol abuse: each misbehaviour gets the right error, or closes that
//! connection only; nothing panics and memory stays bounded.

mod common;

use std::time::Duration;

use common::*;
use s3block_nbd::proto::*;
use s3block_nbd::{MAX_REQUEST_LEN, NbdError, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const SOON: Duration = Duration::from_secs(20);

/// Two connected clients: the one to misbehave, and a bystander.
async fn two(
    server: &Server,
) -> ((Client<DuplexStream>, JoinHandle<Result<(), NbdError>>), Client<DuplexStream>) {
    let (a, ta) = pipe(server);
    let (b, _tb) = pipe(server);
    let a = connect(a, Want::default()).await;
    let b = connect(b, Want { structured: true, ..Want::default() }).await;
    ((a, ta), b)
}

async fn bystander_works(b: &mut Client<DuplexStream>) {
    assert_eq!(b.write(8192, b"still here").await, 0);
    assert_eq!(b.read(8192, 10).await, Ok(b"still here".to_vec()));
}

#[tokio::test]
async fn bad_request_magic_closes_that_connection_only() {
    let server = server_of(memory());
    let ((mut a, ta), mut b) = two(&server).await;
    let mut header = Request { flags: 0, kind: CMD_READ, cookie: 1, offset: 0, len: 512 }.encode();
    header[0] ^= 0xff;
    a.s.write_all(&header).await.expect("write");
    let err = timeout(SOON, ta).await.expect("closed in time").expect("no panic").expect_err("closed");
    assert!(matches!(err, NbdError::Protocol { .. }), "{err}");
    assert!(
        err.to_string().contains("bad request magic 0xda609513") && err.to_string().contains("test-client"),
        "{err}"
    );
    let mut rest = Vec::new();
    a.s.read_to_end(&mut rest).await.expect("eof");
    assert!(rest.is_empty(), "no reply to a request with a bad magic");
    bystander_works(&mut b).await;
    assert_eq!(server.stats().protocol_errors, 1);
}

#[tokio::test]
async fn bad_option_magic_and_oversized_options_close_the_connection() {
    let server = server_of(memory());
    let (mut s, task) = pipe(&server);
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE).await;
    s.write_u64(0x1234).await.expect("write");
    s.write_u64(0).await.expect("write");
    let err = task.await.expect("no panic").expect_err("closed");
    assert!(err.to_string().contains("bad option magic"), "{err}");
    let (mut s, task) = pipe(&server);
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE).await;
    s.write_u64(IHAVEOPT).await.expect("write");
    s.write_u32(OPT_GO).await.expect("write");
    s.write_u32(1 << 30).await.expect("write");
    let err = task.await.expect("no panic").expect_err("closed");
    assert!(err.to_string().contains("1073741824 bytes"), "{err}");
}

#[tokio::test]
async fn an_unknown_option_is_unsupported_and_the_handshake_goes_on() {
    let server = server_of(memory());
    let (mut s, _task) = pipe(&server);
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE).await;
    let r = option(&mut s, 0x7fff_0000, &[1, 2, 3]).await;
    assert_eq!(
        r,
        vec![OptReply {
            option: 0x7fff_0000,
            kind: REP_ERR_UNSUP,
            data: b"option 2147418112 is not supported".to_vec()
        }]
    );
    let r = option(&mut s, OPT_GO, &info_data("vol", &[])).await;
    assert_eq!(r.last().map(|r| r.kind), Some(REP_ACK));
}

#[tokio::test]
async fn an_unknown_command_is_einval_and_the_connection_goes_on() {
    let server = server_of(memory());
    let ((mut a, _ta), mut b) = two(&server).await;
    for kind in [8, 9, 0x4242] {
        assert_eq!(a.cmd(kind, 0, 0, 512, &[]).await, EINVAL);
    }
    assert_eq!(a.write(0, b"fine").await, 0);
    bystander_works(&mut b).await;
    assert_eq!(server.stats().unknown_commands, 3);
}

#[tokio::test]
async fn reads_and_writes_past_the_end_are_refused() {
    let server = server_of(memory());
    let ((mut a, _ta), mut b) = two(&server).await;
    let size = a.size;
    assert_eq!(a.read(size - 10, 11).await, Err(EINVAL));
    assert_eq!(a.read(u64::MAX - 5, 10).await, Err(EINVAL), "offset + length overflows");
    // The payload of a refused write is skipped: the next request is read right.
    assert_eq!(a.write(size - 10, &[7u8; 4096]).await, ENOSPC);
    assert_eq!(a.cmd(CMD_WRITE_ZEROES, 0, size, 1, &[]).await, ENOSPC);
    assert_eq!(a.cmd(CMD_TRIM, 0, size - 1, 2, &[]).await, EINVAL);
    assert_eq!(a.cmd(CMD_CACHE, 0, size, 1, &[]).await, EINVAL);
    assert_eq!(a.read(size - 10, 10).await, Ok(vec![0; 10]));
    // Structured: an error chunk with a message.
    let c = b.send(CMD_READ, 0, size, 1, &[]).await;
    let chunks = b.reply(c).await;
    assert!(
        matches!(&chunks[..], [Chunk::Error { error: EINVAL, message }] if message.contains("past the end")),
        "{chunks:?}"
    );
    bystander_works(&mut b).await;
}

#[tokio::test]
async fn lengths_over_the_maximum_are_einval() {
    let server = server_of(memory());
    // A volume bigger than the maximum request.
    let big = std::sync::Arc::new(s3block_core::MemoryDevice::new(
        s3block_core::Geometry::new(256 << 20, 1 << 20).expect("geometry"),
    ));
    let server_big = server_of(big);
    let (a, _ta) = pipe(&server_big);
    let mut a = connect(a, Want::default()).await;
    let over = MAX_REQUEST_LEN as u32 + 1;
    assert_eq!(a.read(0, over).await, Err(EINVAL));
    assert_eq!(a.cmd(CMD_CACHE, 0, 0, over, &[]).await, EINVAL);
    // A write over the maximum: refused, its payload skipped without being held.
    let payload = vec![3u8; over as usize];
    assert_eq!(a.write(0, &payload).await, EINVAL);
    assert_eq!(server_big.stats().in_flight_bytes, 0);
    // Trims and write-zeroes carry no payload: any length inside the volume.
    assert_eq!(a.cmd(CMD_TRIM, 0, 0, 64 << 20, &[]).await, 0);
    assert_eq!(a.read(0, MAX_REQUEST_LEN as u32).await.map(|d| d.len()), Ok(MAX_REQUEST_LEN));
    drop(server);
}

#[tokio::test]
async fn flags_not_valid_for_the_command_are_einval() {
    let server = server_of(memory());
    let ((mut a, _ta), mut b) = two(&server).await;
    // DF without structured replies, REQ_ONE on a read, NO_HOLE on a write,
    // FAST_ZERO on a trim, an undefined bit.
    assert_eq!(a.read(0, 10).await, Ok(vec![0; 10]));
    for (kind, flags) in [
        (CMD_READ, CMD_FLAG_DF),
        (CMD_READ, CMD_FLAG_REQ_ONE),
        (CMD_TRIM, CMD_FLAG_FAST_ZERO),
        (CMD_FLUSH, 1 << 9),
        (CMD_CACHE, CMD_FLAG_NO_HOLE),
    ] {
        assert_eq!(a.cmd(kind, flags, 0, 10, &[]).await, EINVAL, "{} with {flags:#x}", command_name(kind));
    }
    assert_eq!(a.cmd(CMD_WRITE, CMD_FLAG_NO_HOLE, 0, 4, b"abcd").await, EINVAL);
    // The refused write's payload was skipped.
    assert_eq!(a.read(0, 4).await, Ok(vec![0; 4]));
    // FUA is valid on every command.
    assert_eq!(a.cmd(CMD_FLUSH, CMD_FLAG_FUA, 0, 0, &[]).await, 0);
    // BLOCK_STATUS without a metadata context.
    let c = b.send(CMD_BLOCK_STATUS, 0, 0, 4096, &[]).await;
    assert_eq!(Client::<DuplexStream>::error_of(&b.reply(c).await), EINVAL);
    bystander_works(&mut b).await;
}

#[tokio::test]
async fn a_hang_up_in_the_middle_of_a_write_payload_writes_nothing() {
    let mem = memory();
    let server = server_of(mem.clone());
    let ((a, ta), mut b) = two(&server).await;
    let mut s = a.s;
    let header = Request { flags: 0, kind: CMD_WRITE, cookie: 5, offset: 0, len: 8192 }.encode();
    s.write_all(&header).await.expect("write");
    s.write_all(&[9u8; 3000]).await.expect("write");
    drop(s);
    let err = timeout(SOON, ta).await.expect("in time").expect("no panic").expect_err("closed");
    assert!(err.to_string().contains("middle of a write's payload"), "{err}");
    assert_eq!(mem.stored_blocks(), 0);
    bystander_works(&mut b).await;
    assert_eq!(server.stats().in_flight_bytes, 0);
}

#[tokio::test]
async fn a_client_that_never_reads_replies_stalls_alone_with_bounded_memory() {
    let mem = memory();
    let server = server_of(mem.clone());
    // A small pipe: the replies fill it quickly.
    let (a, ta) = {
        let (client, served) = tokio::io::duplex(64 << 10);
        let server = server.clone();
        (client, tokio::spawn(async move { server.serve(served, "greedy").await }))
    };
    let (b, _tb) = pipe(&server);
    let a = connect(a, Want::default()).await;
    let mut b = connect(b, Want::default()).await;
    let (rd, mut wr) = tokio::io::split(a.s);
    // The greedy client sends 6,000 reads of 256 KiB (1.5 GiB of replies)
    // and reads nothing.
    let sender = tokio::spawn(async move {
        for i in 0..6000u64 {
            let r = Request { flags: 0, kind: CMD_READ, cookie: i, offset: 0, len: 256 << 10 }.encode();
            if wr.write_all(&r).await.is_err() {
                return (i, wr);
            }
        }
        (6000, wr)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = server.stats();
    // Bounded by the connection's budget (32 MiB) and its request slots.
    assert!(stats.in_flight_bytes <= 32 << 20, "{stats:?}");
    assert!(stats.in_flight <= 128, "{stats:?}");
    assert!(!sender.is_finished(), "the server stopped reading the greedy client");
    // The other connection is served meanwhile.
    assert_eq!(b.write(0, b"served").await, 0);
    assert_eq!(b.read(0, 6).await, Ok(b"served".to_vec()));
    println!("greedy client: {} requests in flight, {} bytes held", stats.in_flight, stats.in_flight_bytes);
    // The greedy client goes away: its connection ends, the budget is back.
    sender.abort();
    drop(rd);
    let _ = sender.await;
    let end = timeout(SOON, ta).await.expect("the connection ends").expect("no panic");
    assert!(end.is_err(), "a client gone with replies unread is an I/O error");
    timeout(SOON, server.drained()).await.expect("drained");
    assert_eq!(server.stats().in_flight_bytes, 0);
    bystander_works(&mut b).await;
}
