//! The NBD protocol as a client sees it: handshakes, options, commands,
//! structured replies, block status, out-of-order replies, several
//! connections, STARTTLS.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use s3block_core::{BlockDevice, BlockDeviceExt, BlockId};
use s3block_nbd::proto::*;
use s3block_nbd::{Export, MAX_REQUEST_LEN, Server, ServerConfig, load_tls_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const SOON: Duration = Duration::from_secs(10);

#[tokio::test]
async fn greeting_offers_fixed_newstyle_and_no_zeroes_and_abort_ends_cleanly() {
    let server = server_of(memory());
    let (mut s, task) = pipe(&server);
    let flags = greet(&mut s, FLAG_C_FIXED_NEWSTYLE).await;
    assert_eq!(flags, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    let r = option(&mut s, OPT_ABORT, &[]).await;
    assert_eq!(r[0].kind, REP_ACK);
    assert!(task.await.expect("join").is_ok());
    assert_eq!(server.stats().sessions, 0);
}

#[tokio::test]
async fn export_name_with_and_without_zeroes() {
    for no_zeroes in [false, true] {
        let mem = memory();
        mem.write_at(0, Bytes::from(pattern(1, 100))).await.expect("write");
        let server = server_of(mem);
        let (mut s, task) = pipe(&server);
        let client_flags = FLAG_C_FIXED_NEWSTYLE | if no_zeroes { FLAG_C_NO_ZEROES } else { 0 };
        greet(&mut s, client_flags).await;
        send_option(&mut s, OPT_EXPORT_NAME, b"").await;
        let size = s.read_u64().await.expect("size");
        assert_eq!(size, BLOCKS * u64::from(BS));
        let flags = s.read_u16().await.expect("flags");
        assert_eq!(flags & FLAG_SEND_DF, 0, "no DF without structured replies");
        assert_ne!(flags & FLAG_CAN_MULTI_CONN, 0);
        if !no_zeroes {
            let mut zeros = [1u8; 124];
            s.read_exact(&mut zeros).await.expect("zeroes");
            assert_eq!(zeros, [0u8; 124]);
        }
        let mut c = Client::new(s, false, size, flags);
        assert_eq!(c.read(0, 100).await, Ok(pattern(1, 100)));
        c.disconnect().await;
        assert!(task.await.expect("join").is_ok());
    }
}

#[tokio::test]
async fn export_name_of_an_unknown_export_closes_the_connection() {
    let server = server_of(memory());
    let (mut s, task) = pipe(&server);
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE).await;
    send_option(&mut s, OPT_EXPORT_NAME, b"other").await;
    let err = task.await.expect("join").expect_err("refused");
    assert!(err.to_string().contains("\"other\""), "{err}");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.expect("closed");
    assert!(rest.is_empty());
}

#[tokio::test]
async fn unknown_client_flags_close_the_connection() {
    let server = server_of(memory());
    let (mut s, task) = pipe(&server);
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE | 0x80).await;
    let err = task.await.expect("join").expect_err("refused");
    assert!(err.to_string().contains("client flags 0x81"), "{err}");
}

#[tokio::test]
async fn info_and_go_describe_the_export() {
    let server =
        Server::new(Export::new(memory()).name("vol").description("a test volume"), ServerConfig::default());
    let (mut s, _task) = pipe(&server);
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).await;
    let r =
        option(&mut s, OPT_INFO, &info_data("vol", &[INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE])).await;
    assert_eq!(r.last().map(|r| r.kind), Some(REP_ACK));
    let (size, flags) = export_info(&r);
    assert_eq!(size, BLOCKS * u64::from(BS));
    let want = FLAG_HAS_FLAGS
        | FLAG_SEND_FLUSH
        | FLAG_SEND_FUA
        | FLAG_SEND_TRIM
        | FLAG_SEND_WRITE_ZEROES
        | FLAG_SEND_FAST_ZERO
        | FLAG_SEND_CACHE
        | FLAG_CAN_MULTI_CONN;
    assert_eq!(flags, want);
    let item = |kind: u16| {
        r.iter().find(|r| r.data[..2] == kind.to_be_bytes()).map(|r| r.data[2..].to_vec()).expect("item")
    };
    assert_eq!(item(INFO_NAME), b"vol");
    assert_eq!(item(INFO_DESCRIPTION), b"a test volume");
    let sizes = item(INFO_BLOCK_SIZE);
    let be = |i: usize| u32::from_be_bytes(sizes[i..i + 4].try_into().expect("4 bytes"));
    assert_eq!((be(0), be(4), be(8)), (512, BS, MAX_REQUEST_LEN as u32));
    // An unknown export is an error the client can read, not a hang-up.
    let r = option(&mut s, OPT_INFO, &info_data("nope", &[])).await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].kind, REP_ERR_UNKNOWN);
    let r = option(&mut s, OPT_GO, &info_data("nope", &[])).await;
    assert_eq!(r[0].kind, REP_ERR_UNKNOWN);
    // Malformed: a name longer than the data.
    let r = option(&mut s, OPT_GO, &[0, 0, 1, 0, b'v']).await;
    assert_eq!(r[0].kind, REP_ERR_INVALID);
    // After structured replies, GO adds DF; the default export is the empty name.
    assert_eq!(option(&mut s, OPT_STRUCTURED_REPLY, &[]).await[0].kind, REP_ACK);
    let r = option(&mut s, OPT_GO, &info_data("", &[])).await;
    assert_eq!(r.last().map(|r| r.kind), Some(REP_ACK));
    assert_eq!(export_info(&r).1, want | FLAG_SEND_DF);
    let mut c = Client::new(s, true, size, want | FLAG_SEND_DF);
    assert_eq!(c.cmd(CMD_FLUSH, 0, 0, 0, &[]).await, 0);
}

#[tokio::test]
async fn list_names_the_export() {
    let server = server_of(memory());
    let (mut s, _task) = pipe(&server);
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE).await;
    let r = option(&mut s, OPT_LIST, &[]).await;
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].kind, REP_SERVER);
    assert_eq!(&r[0].data[..4], &3u32.to_be_bytes());
    assert_eq!(&r[0].data[4..7], b"vol");
    assert_eq!(&r[0].data[7..], b"a test volume");
    assert_eq!(r[1].kind, REP_ACK);
    assert_eq!(option(&mut s, OPT_LIST, b"x").await[0].kind, REP_ERR_INVALID);
}

#[tokio::test]
async fn unknown_options_and_starttls_without_tls_are_unsupported() {
    let server = server_of(memory());
    let (mut s, _task) = pipe(&server);
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE).await;
    for opt in [4, 11, 12, 999] {
        let r = option(&mut s, opt, b"some data").await;
        assert_eq!((r.len(), r[0].kind, r[0].option), (1, REP_ERR_UNSUP, opt));
    }
    assert_eq!(option(&mut s, OPT_STARTTLS, &[]).await[0].kind, REP_ERR_UNSUP);
    assert_eq!(option(&mut s, OPT_STRUCTURED_REPLY, b"x").await[0].kind, REP_ERR_INVALID);
    // The session goes on.
    let r = option(&mut s, OPT_GO, &info_data("vol", &[])).await;
    assert_eq!(r.last().map(|r| r.kind), Some(REP_ACK));
}

#[tokio::test]
async fn meta_contexts_list_and_set_base_allocation() {
    let server = server_of(memory());
    let (mut s, _task) = pipe(&server);
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE).await;
    // Before structured replies: invalid.
    let r = option(&mut s, OPT_SET_META_CONTEXT, &meta_data("vol", &[BASE_ALLOCATION])).await;
    assert_eq!(r[0].kind, REP_ERR_INVALID);
    assert_eq!(option(&mut s, OPT_STRUCTURED_REPLY, &[]).await[0].kind, REP_ACK);
    for queries in [&[][..], &["base:"][..], &[BASE_ALLOCATION][..]] {
        let r = option(&mut s, OPT_LIST_META_CONTEXT, &meta_data("vol", queries)).await;
        assert_eq!(r.len(), 2, "{queries:?}");
        assert_eq!(r[0].kind, REP_META_CONTEXT);
        assert_eq!(&r[0].data[4..], BASE_ALLOCATION.as_bytes());
    }
    // Unknown namespaces and leaves are ignored.
    let r = option(&mut s, OPT_LIST_META_CONTEXT, &meta_data("vol", &["qemu:dirty-bitmap:x", "base:other"]))
        .await;
    assert_eq!((r.len(), r[0].kind), (1, REP_ACK));
    let r = option(&mut s, OPT_SET_META_CONTEXT, &meta_data("vol", &[])).await;
    assert_eq!((r.len(), r[0].kind), (1, REP_ACK), "no query selects nothing");
    let r = option(&mut s, OPT_SET_META_CONTEXT, &meta_data("other", &[BASE_ALLOCATION])).await;
    assert_eq!(r[0].kind, REP_ERR_UNKNOWN);
    let r =
        option(&mut s, OPT_SET_META_CONTEXT, &[0, 0, 0, 3, b'v', b'o', b'l', 0, 0, 0, 1, 0, 0, 0, 9]).await;
    assert_eq!(r[0].kind, REP_ERR_INVALID, "a query past the end of the data");
    let r = option(&mut s, OPT_SET_META_CONTEXT, &meta_data("vol", &[BASE_ALLOCATION])).await;
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].kind, REP_META_CONTEXT);
    let id = u32::from_be_bytes(r[0].data[..4].try_into().expect("4 bytes"));
    let r = option(&mut s, OPT_GO, &info_data("vol", &[])).await;
    assert_eq!(r.last().map(|r| r.kind), Some(REP_ACK));
    let mut c = Client::new(s, true, BLOCKS * u64::from(BS), 0);
    let cookie = c.send(CMD_BLOCK_STATUS, 0, 0, 8192, &[]).await;
    let chunks = c.reply(cookie).await;
    assert_eq!(chunks, vec![Chunk::Status { context: id, extents: vec![(8192, STATE_HOLE | STATE_ZERO)] }]);
}

#[tokio::test]
async fn simple_replies_read_write_flush_and_disconnect() {
    let mem = memory();
    let server = server_of(mem.clone());
    let (s, task) = pipe(&server);
    let mut c = connect(s, Want::default()).await;
    let data = pattern(7, 10_000);
    assert_eq!(c.write(1000, &data).await, 0);
    assert_eq!(c.read(1000, 10_000).await, Ok(data.clone()));
    assert_eq!(c.read(0, 1000).await, Ok(vec![0; 1000]));
    assert_eq!(c.cmd(CMD_WRITE, CMD_FLAG_FUA, 50_000, 3, b"abc").await, 0);
    assert_eq!(c.cmd(CMD_FLUSH, 0, 0, 0, &[]).await, 0);
    assert!(mem.counts().flushes >= 2);
    assert_eq!(&mem.read_at(1000, 10_000).await.expect("read")[..], &data[..]);
    c.disconnect().await;
    assert!(task.await.expect("join").is_ok());
    let st = server.stats();
    assert_eq!((st.writes, st.flushes, st.reads, st.disconnects), (2, 1, 2, 1));
    assert_eq!((st.bytes_written, st.bytes_read), (10_003, 11_000));
    assert_eq!((st.in_flight, st.in_flight_bytes, st.active_connections), (0, 0, 0));
}

#[tokio::test]
async fn structured_reads_send_holes_as_hole_chunks() {
    let mem = memory();
    // Blocks 2 and 5 hold data.
    mem.write_at(2 * 4096, Bytes::from(pattern(1, 4096))).await.expect("write");
    mem.write_at(5 * 4096 + 10, Bytes::from(pattern(2, 10))).await.expect("write");
    let server = server_of(mem);
    let (s, _task) = pipe(&server);
    let mut c = connect(s, Want { structured: true, ..Want::default() }).await;
    assert_ne!(c.flags & FLAG_SEND_DF, 0);
    let (offset, len) = (4096 + 100, 6 * 4096);
    let cookie = c.send(CMD_READ, 0, offset, len, &[]).await;
    let chunks = c.reply(cookie).await;
    assert_eq!(chunks.len(), 5, "{chunks:?}");
    assert_eq!(chunks[0], Chunk::Hole { offset, len: 4096 - 100 });
    assert!(matches!(&chunks[1], Chunk::Data { offset: 8192, data } if data.len() == 4096));
    assert_eq!(chunks[2], Chunk::Hole { offset: 3 * 4096, len: 2 * 4096 });
    assert!(matches!(&chunks[3], Chunk::Data { offset: 20480, data } if data.len() == 4096));
    assert_eq!(chunks[4], Chunk::Hole { offset: 6 * 4096, len: 4096 + 100 });
    let mut want = vec![0u8; len as usize];
    want[4096 - 100..8192 - 100].copy_from_slice(&pattern(1, 4096));
    want[4 * 4096 - 100 + 10..4 * 4096 - 100 + 20].copy_from_slice(&pattern(2, 10));
    assert_eq!(Client::<tokio::io::DuplexStream>::assemble(offset, len, &chunks), Ok(want.clone()));
    // Don't fragment: one data chunk, zeros included.
    let cookie = c.send(CMD_READ, CMD_FLAG_DF, offset, len, &[]).await;
    let chunks = c.reply(cookie).await;
    assert_eq!(chunks, vec![Chunk::Data { offset, data: want }]);
    // A read of nothing.
    let cookie = c.send(CMD_READ, 0, 0, 0, &[]).await;
    assert_eq!(c.reply(cookie).await, vec![Chunk::None]);
}

#[tokio::test]
async fn trim_and_write_zeroes_make_holes_and_block_status_shows_them() {
    let mem = memory();
    let server = server_of(mem.clone());
    let (s, _task) = pipe(&server);
    let mut c = connect(s, Want { structured: true, meta: true, ..Want::default() }).await;
    assert_eq!(c.write(0, &pattern(3, 8 * 4096)).await, 0);
    assert_eq!(mem.stored_blocks(), 8);
    // Trim from the middle of block 1 to the middle of block 4: blocks 2
    // and 3 are discarded, the ends of 1 and 4 zeroed.
    assert_eq!(c.cmd(CMD_TRIM, 0, 4096 + 2048, 3 * 4096, &[]).await, 0);
    assert_eq!(mem.stored_blocks(), 6);
    let got = c.read(0, 8 * 4096).await.expect("read");
    let mut want = pattern(3, 8 * 4096);
    want[4096 + 2048..4 * 4096 + 2048].fill(0);
    assert_eq!(got, want);
    // Write zeroes over block 6 whole, with FUA, NO_HOLE and FAST_ZERO.
    let flags = CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO;
    assert_eq!(c.cmd(CMD_WRITE_ZEROES, flags, 6 * 4096, 4096, &[]).await, 0);
    assert_eq!(mem.stored_blocks(), 5);
    let cookie = c.send(CMD_BLOCK_STATUS, 0, 0, 10 * 4096, &[]).await;
    let chunks = c.reply(cookie).await;
    let hole = STATE_HOLE | STATE_ZERO;
    let Chunk::Status { extents, .. } = &chunks[0] else { panic!("{chunks:?}") };
    assert_eq!(
        extents,
        &vec![(2 * 4096, 0), (2 * 4096, hole), (2 * 4096, 0), (4096, hole), (4096, 0), (2 * 4096, hole)]
    );
    // One extent only, and an unaligned start.
    let cookie = c.send(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 2 * 4096 + 1, 10 * 4096, &[]).await;
    let chunks = c.reply(cookie).await;
    let Chunk::Status { extents, .. } = &chunks[0] else { panic!("{chunks:?}") };
    assert_eq!(extents, &vec![(2 * 4096 - 1, hole)]);
}

#[tokio::test]
async fn cache_prefetches_through_the_device() {
    let mem = memory();
    mem.write_at(0, Bytes::from(pattern(4, 3 * 4096))).await.expect("write");
    let server = server_of(mem.clone());
    let (s, _task) = pipe(&server);
    let mut c = connect(s, Want::default()).await;
    let before = mem.counts().reads;
    assert_eq!(c.cmd(CMD_CACHE, 0, 100, 2 * 4096, &[]).await, 0);
    assert_eq!(mem.counts().reads - before, 3, "blocks 0, 1 and 2 read whole");
    assert_eq!(server.stats().caches, 1);
}

#[tokio::test]
async fn replies_come_out_of_order() {
    let mem = memory();
    mem.write_at(0, Bytes::from(pattern(5, 4 * 4096))).await.expect("write");
    let gated = Arc::new(Gated::new(mem));
    let server = server_of(gated.clone());
    let (s, _task) = pipe(&server);
    let mut c = connect(s, Want { structured: true, ..Want::default() }).await;
    gated.hold(0);
    let first = c.send(CMD_READ, 0, 0, 4096, &[]).await;
    timeout(SOON, gated.wait_arrived(0)).await.expect("the first read reaches the device");
    let second = c.send(CMD_READ, 0, 4096, 4096, &[]).await;
    let third = c.send(CMD_WRITE, 0, 3 * 4096, 4, b"abcd").await;
    // The later requests are answered while the first is held.
    let mut answered = Vec::new();
    for _ in 0..2 {
        let (cookie, _, done) = timeout(SOON, c.recv()).await.expect("a reply in time").expect("reply");
        assert!(done);
        answered.push(cookie);
    }
    answered.sort_unstable();
    assert_eq!(answered, vec![second, third]);
    assert_eq!(server.stats().in_flight, 1);
    gated.release(0);
    let (cookie, chunk, _) = timeout(SOON, c.recv()).await.expect("in time").expect("reply");
    assert_eq!(cookie, first);
    assert_eq!(chunk, Chunk::Data { offset: 0, data: pattern(5, 4 * 4096)[..4096].to_vec() });
    timeout(SOON, server.drained()).await.expect("drained");
}

#[tokio::test]
async fn a_flush_on_one_connection_covers_writes_on_another() {
    let mem = memory();
    let cache_like: Arc<dyn BlockDevice> = mem.clone();
    let server = server_of(cache_like);
    let (a, _ta) = pipe(&server);
    let (b, _tb) = pipe(&server);
    let mut a = connect(a, Want::default()).await;
    let mut b = connect(b, Want { structured: true, ..Want::default() }).await;
    assert_eq!(a.write(4096, &pattern(9, 4096)).await, 0);
    let flushes = mem.counts().flushes;
    assert_eq!(b.cmd(CMD_FLUSH, 0, 0, 0, &[]).await, 0);
    assert_eq!(mem.counts().flushes, flushes + 1, "the device was flushed");
    // And B sees A's write.
    assert_eq!(b.read(4096, 4096).await, Ok(pattern(9, 4096)));
    assert_eq!(server.stats().active_connections, 2);
}

#[tokio::test]
async fn a_read_only_export_refuses_writes_with_eperm() {
    let mem = memory();
    let server = Server::new(Export::new(mem.clone()).name("vol").read_only(true), ServerConfig::default());
    let (s, _task) = pipe(&server);
    let mut c = connect(s, Want::default()).await;
    assert_ne!(c.flags & FLAG_READ_ONLY, 0);
    assert_eq!(c.write(0, b"nope").await, EPERM);
    assert_eq!(c.cmd(CMD_TRIM, 0, 0, 4096, &[]).await, EPERM);
    assert_eq!(c.cmd(CMD_WRITE_ZEROES, 0, 0, 4096, &[]).await, EPERM);
    assert_eq!(c.read(0, 4).await, Ok(vec![0; 4]));
    assert_eq!(c.cmd(CMD_FLUSH, 0, 0, 0, &[]).await, 0);
    assert_eq!(mem.stored_blocks(), 0);
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_then_closes() {
    let mem = memory();
    let gated = Arc::new(Gated::new(mem));
    let server = server_of(gated.clone());
    let (s, task) = pipe(&server);
    let mut c = connect(s, Want::default()).await;
    gated.hold(1);
    let cookie = c.send(CMD_READ, 0, 4096, 10, &[]).await;
    timeout(SOON, gated.wait_arrived(1)).await.expect("arrived");
    server.shutdown();
    // New options on a new connection are refused.
    let (mut s2, _t2) = pipe(&server);
    greet(&mut s2, FLAG_C_FIXED_NEWSTYLE).await;
    assert_eq!(option(&mut s2, OPT_GO, &info_data("vol", &[])).await[0].kind, REP_ERR_SHUTDOWN);
    assert_eq!(server.stats().in_flight, 1);
    gated.release(1);
    timeout(SOON, server.drained()).await.expect("drained");
    assert_eq!(c.reply(cookie).await, vec![Chunk::Simple { error: 0, data: vec![0; 10] }]);
    assert!(timeout(SOON, task).await.expect("the connection ends").expect("join").is_ok());
}

fn tls_server(required: bool) -> Server {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let tls =
        load_tls_config(format!("{data}/server.pem"), format!("{data}/server.key")).expect("tls config");
    let config = ServerConfig::builder().tls(tls).tls_required(required).build();
    Server::new(Export::new(memory()).name("vol"), config)
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let ca = std::fs::read(format!("{data}/ca.pem")).expect("ca");
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.expect("ca cert")).expect("add ca");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn starttls_upgrades_the_session() {
    let server = tls_server(true);
    let (mut s, _task) = pipe(&server);
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).await;
    // TLS required: everything else is refused until STARTTLS.
    assert_eq!(option(&mut s, OPT_GO, &info_data("vol", &[])).await[0].kind, REP_ERR_TLS_REQD);
    assert_eq!(option(&mut s, OPT_STRUCTURED_REPLY, &[]).await[0].kind, REP_ERR_TLS_REQD);
    assert_eq!(option(&mut s, OPT_STARTTLS, b"x").await[0].kind, REP_ERR_INVALID);
    assert_eq!(option(&mut s, OPT_STARTTLS, &[]).await[0].kind, REP_ACK);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut t = tls_connector().connect(name, s).await.expect("TLS handshake");
    assert_eq!(option(&mut t, OPT_STARTTLS, &[]).await[0].kind, REP_ERR_INVALID, "TLS already started");
    let mut c = connect_after_greeting(t).await;
    assert_eq!(c.write(0, b"secret").await, 0);
    assert_eq!(c.read(0, 6).await, Ok(b"secret".to_vec()));
    c.disconnect().await;
}

#[tokio::test]
async fn export_name_before_starttls_when_required_closes() {
    let server = tls_server(true);
    let (mut s, task) = pipe(&server);
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE).await;
    send_option(&mut s, OPT_EXPORT_NAME, b"vol").await;
    let err = task.await.expect("join").expect_err("closed");
    assert!(err.to_string().contains("TLS"), "{err}");
}

#[tokio::test]
async fn tls_is_optional_unless_required() {
    let server = tls_server(false);
    let (mut s, _task) = pipe(&server);
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE).await;
    let r = option(&mut s, OPT_GO, &info_data("vol", &[])).await;
    assert_eq!(r.last().map(|r| r.kind), Some(REP_ACK));
}

#[test]
fn tls_config_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.pem");
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let err = load_tls_config(&missing, format!("{data}/server.key")).expect_err("missing");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not pem").expect("write");
    let err = load_tls_config(&empty, format!("{data}/server.key")).expect_err("empty");
    assert!(err.to_string().contains("empty.pem") && err.to_string().contains("no PEM certificate"), "{err}");
    let err = load_tls_config(format!("{data}/server.pem"), &empty).expect_err("no key");
    assert!(err.to_string().contains("empty.pem") && err.to_string().contains("private key"), "{err}");
    // A key that does not go with the certificate.
    let err = load_tls_config(format!("{data}/ca.pem"), format!("{data}/server.key")).expect_err("mismatch");
    assert!(err.to_string().contains("server.key"), "{err}");
}

/// GO with structured replies after the greeting was already done.
async fn connect_after_greeting<S: Stream>(mut s: S) -> Client<S> {
    assert_eq!(option(&mut s, OPT_STRUCTURED_REPLY, &[]).await[0].kind, REP_ACK);
    let r = option(&mut s, OPT_GO, &info_data("vol", &[])).await;
    assert_eq!(r.last().map(|r| r.kind), Some(REP_ACK));
    let (size, flags) = export_info(&r);
    Client::new(s, true, size, flags)
}

#[tokio::test]
async fn block_status_of_a_big_range_is_bounded() {
    // A volume of 2^20 blocks of 512 bytes, every other block stored.
    let g = s3block_core::Geometry::new(512 << 20, 512).expect("geometry");
    let mem = Arc::new(s3block_core::MemoryDevice::new(g));
    for b in (0..200_000u32).step_by(2) {
        mem.write_block(BlockId(b), Bytes::from(vec![1u8; 512])).await.expect("write");
    }
    let server = server_of(mem);
    let (s, _task) = pipe(&server);
    let mut c = connect(s, Want { structured: true, meta: true, ..Want::default() }).await;
    let cookie = c.send(CMD_BLOCK_STATUS, 0, 0, 512 << 20, &[]).await;
    let chunks = c.reply(cookie).await;
    let Chunk::Status { extents, .. } = &chunks[0] else { panic!("{chunks:?}") };
    // At most 2^16 blocks looked up: as many descriptors, then the client asks again.
    assert_eq!(extents.len(), 1 << 16);
    assert!(extents.iter().all(|&(len, _)| len == 512));
    let mut s = c.disconnect().await;
    s.shutdown().await.expect("shutdown");
}
