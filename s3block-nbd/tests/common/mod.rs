//! A small NBD client for the tests, and devices to serve.
#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use s3block_core::{Allocation, BlockDevice, BlockId, Geometry, MemoryDevice, Result, async_trait};
use s3block_nbd::proto::*;
use s3block_nbd::{Export, NbdError, Server, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub const BS: u32 = 4096;
pub const BLOCKS: u64 = 64;

pub fn geometry() -> Geometry {
    Geometry::new(BLOCKS * u64::from(BS), u64::from(BS)).expect("valid geometry")
}

pub fn memory() -> Arc<MemoryDevice> {
    Arc::new(MemoryDevice::new(geometry()))
}

pub fn server_of(device: Arc<dyn BlockDevice>) -> Server {
    Server::new(Export::new(device).name("vol").description("a test volume"), ServerConfig::default())
}

/// Connects a client end to `server` over an in-memory pipe.
pub fn pipe(server: &Server) -> (DuplexStream, JoinHandle<Result<(), NbdError>>) {
    let (client, served) = tokio::io::duplex(256 << 10);
    let server = server.clone();
    let task = tokio::spawn(async move { server.serve(served, "test-client").await });
    (client, task)
}

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An option reply: option, reply type, data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptReply {
    pub option: u32,
    pub kind: u32,
    pub data: Vec<u8>,
}

/// Reads the greeting, sends the client flags; returns the handshake flags.
pub async fn greet<S: Stream>(s: &mut S, client_flags: u32) -> u16 {
    assert_eq!(s.read_u64().await.expect("magic"), NBD_MAGIC);
    assert_eq!(s.read_u64().await.expect("ihaveopt"), IHAVEOPT);
    let flags = s.read_u16().await.expect("handshake flags");
    s.write_u32(client_flags).await.expect("client flags");
    flags
}

pub async fn send_option<S: Stream>(s: &mut S, option: u32, data: &[u8]) {
    s.write_u64(IHAVEOPT).await.expect("write");
    s.write_u32(option).await.expect("write");
    s.write_u32(data.len() as u32).await.expect("write");
    s.write_all(data).await.expect("write");
    s.flush().await.expect("flush");
}

pub async fn read_option_reply<S: Stream>(s: &mut S) -> OptReply {
    assert_eq!(s.read_u64().await.expect("reply magic"), OPT_REPLY_MAGIC);
    let option = s.read_u32().await.expect("option");
    let kind = s.read_u32().await.expect("type");
    let len = s.read_u32().await.expect("len");
    let mut data = vec![0; len as usize];
    s.read_exact(&mut data).await.expect("data");
    OptReply { option, kind, data }
}

/// Sends an option and reads its replies up to the final one (ACK or error).
pub async fn option<S: Stream>(s: &mut S, option: u32, data: &[u8]) -> Vec<OptReply> {
    send_option(s, option, data).await;
    let mut out = Vec::new();
    loop {
        let r = read_option_reply(s).await;
        let last = r.kind == REP_ACK || r.kind & (1 << 31) != 0;
        out.push(r);
        if last {
            return out;
        }
    }
}

/// The data of `NBD_OPT_INFO`/`GO`.
pub fn info_data(name: &str, infos: &[u16]) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        d.extend_from_slice(&i.to_be_bytes());
    }
    d
}

/// The data of `NBD_OPT_LIST/SET_META_CONTEXT`.
pub fn meta_data(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        d.extend_from_slice(&(q.len() as u32).to_be_bytes());
        d.extend_from_slice(q.as_bytes());
    }
    d
}

/// Size and transmission flags from an `NBD_INFO_EXPORT` reply.
pub fn export_info(replies: &[OptReply]) -> (u64, u16) {
    let r = replies
        .iter()
        .find(|r| r.kind == REP_INFO && r.data[..2] == INFO_EXPORT.to_be_bytes())
        .expect("an NBD_INFO_EXPORT reply");
    assert_eq!(r.data.len(), 12);
    let size = u64::from_be_bytes(r.data[2..10].try_into().expect("8 bytes"));
    (size, u16::from_be_bytes([r.data[10], r.data[11]]))
}

/// A reply chunk or simple reply, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Simple { error: u32, data: Vec<u8> },
    Data { offset: u64, data: Vec<u8> },
    Hole { offset: u64, len: u32 },
    Status { context: u32, extents: Vec<(u32, u32)> },
    Error { error: u32, message: String },
    None,
}

/// A client in the transmission phase.
pub struct Client<S> {
    pub s: S,
    pub structured: bool,
    pub size: u64,
    pub flags: u16,
    /// Lengths of outstanding reads, for simple replies.
    reads: HashMap<u64, u32>,
    next: u64,
}

/// Options for [`connect`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Want {
    pub structured: bool,
    pub meta: bool,
    pub no_zeroes: bool,
}

/// Handshakes with GO (or EXPORT_NAME when `export_name`).
pub async fn connect<S: Stream>(mut s: S, want: Want) -> Client<S> {
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).await;
    if want.structured {
        let r = option(&mut s, OPT_STRUCTURED_REPLY, &[]).await;
        assert_eq!(r[0].kind, REP_ACK);
    }
    if want.meta {
        let r = option(&mut s, OPT_SET_META_CONTEXT, &meta_data("vol", &[BASE_ALLOCATION])).await;
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].kind, REP_META_CONTEXT);
    }
    let r = option(&mut s, OPT_GO, &info_data("vol", &[INFO_BLOCK_SIZE])).await;
    assert_eq!(r.last().map(|r| r.kind), Some(REP_ACK), "{r:?}");
    let (size, flags) = export_info(&r);
    Client { s, structured: want.structured, size, flags, reads: HashMap::new(), next: 1 }
}

impl<S: Stream> Client<S> {
    /// A client over a stream already in the transmission phase.
    pub fn new(s: S, structured: bool, size: u64, flags: u16) -> Self {
        Client { s, structured, size, flags, reads: HashMap::new(), next: 1 }
    }

    /// Sends a request; returns its cookie.
    pub async fn send(&mut self, kind: u16, flags: u16, offset: u64, len: u32, payload: &[u8]) -> u64 {
        let cookie = self.next;
        self.next += 1;
        self.send_with(cookie, kind, flags, offset, len, payload).await;
        cookie
    }

    pub async fn send_with(
        &mut self,
        cookie: u64,
        kind: u16,
        flags: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) {
        if kind == CMD_READ {
            self.reads.insert(cookie, len);
        }
        let r = Request { flags, kind, cookie, offset, len };
        self.s.write_all(&r.encode()).await.expect("write request");
        self.s.write_all(payload).await.expect("write payload");
        self.s.flush().await.expect("flush");
    }

    /// Reads one simple reply or structured chunk: (cookie, chunk, done).
    pub async fn recv(&mut self) -> std::io::Result<(u64, Chunk, bool)> {
        let magic = self.s.read_u32().await?;
        if magic == SIMPLE_REPLY_MAGIC {
            let error = self.s.read_u32().await?;
            let cookie = self.s.read_u64().await?;
            let mut data = Vec::new();
            if let Some(len) = self.reads.remove(&cookie)
                && error == 0
            {
                data = vec![0; len as usize];
                self.s.read_exact(&mut data).await?;
            }
            return Ok((cookie, Chunk::Simple { error, data }, true));
        }
        assert_eq!(magic, STRUCTURED_REPLY_MAGIC, "reply magic");
        let flags = self.s.read_u16().await?;
        let kind = self.s.read_u16().await?;
        let cookie = self.s.read_u64().await?;
        let len = self.s.read_u32().await?;
        let mut payload = vec![0; len as usize];
        self.s.read_exact(&mut payload).await?;
        let done = flags & REPLY_FLAG_DONE != 0;
        if done {
            self.reads.remove(&cookie);
        }
        let be32 = |b: &[u8]| u32::from_be_bytes(b[..4].try_into().expect("4 bytes"));
        let be64 = |b: &[u8]| u64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
        let chunk = match kind {
            REPLY_TYPE_NONE => Chunk::None,
            REPLY_TYPE_OFFSET_DATA => Chunk::Data { offset: be64(&payload), data: payload[8..].to_vec() },
            REPLY_TYPE_OFFSET_HOLE => Chunk::Hole { offset: be64(&payload), len: be32(&payload[8..]) },
            REPLY_TYPE_BLOCK_STATUS => Chunk::Status {
                context: be32(&payload),
                extents: payload[4..].chunks(8).map(|c| (be32(c), be32(&c[4..]))).collect(),
            },
            REPLY_TYPE_ERROR => {
                let n = u16::from_be_bytes([payload[4], payload[5]]) as usize;
                Chunk::Error {
                    error: be32(&payload),
                    message: String::from_utf8_lossy(&payload[6..6 + n]).into(),
                }
            }
            other => panic!("unexpected chunk type {other}"),
        };
        Ok((cookie, chunk, done))
    }

    /// Reads every chunk of the reply to `cookie` (nothing else may come).
    pub async fn reply(&mut self, cookie: u64) -> Vec<Chunk> {
        let mut out = Vec::new();
        loop {
            let (c, chunk, done) = self.recv().await.expect("a reply");
            assert_eq!(c, cookie, "reply to another request");
            out.push(chunk);
            if done {
                return out;
            }
        }
    }

    /// The error of a reply, 0 for success.
    pub fn error_of(chunks: &[Chunk]) -> u32 {
        chunks
            .iter()
            .find_map(|c| match c {
                Chunk::Simple { error, .. } => Some(*error),
                Chunk::Error { error, .. } => Some(*error),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// Assembles a read's chunks: the bytes, or the error.
    pub fn assemble(offset: u64, len: u32, chunks: &[Chunk]) -> std::result::Result<Vec<u8>, u32> {
        let mut out = vec![0xeeu8; len as usize];
        let mut covered = 0u64;
        for c in chunks {
            match c {
                Chunk::Simple { error: 0, data } => return Ok(data.clone()),
                Chunk::Simple { error, .. } | Chunk::Error { error, .. } => return Err(*error),
                Chunk::Data { offset: o, data } => {
                    let at = (o - offset) as usize;
                    out[at..at + data.len()].copy_from_slice(data);
                    covered += data.len() as u64;
                }
                Chunk::Hole { offset: o, len } => {
                    let at = (o - offset) as usize;
                    out[at..at + *len as usize].fill(0);
                    covered += u64::from(*len);
                }
                _ => {}
            }
        }
        assert_eq!(covered, u64::from(len), "chunks cover the read");
        Ok(out)
    }

    pub async fn read(&mut self, offset: u64, len: u32) -> std::result::Result<Vec<u8>, u32> {
        let c = self.send(CMD_READ, 0, offset, len, &[]).await;
        let chunks = self.reply(c).await;
        Self::assemble(offset, len, &chunks)
    }

    pub async fn cmd(&mut self, kind: u16, flags: u16, offset: u64, len: u32, payload: &[u8]) -> u32 {
        let c = self.send(kind, flags, offset, len, payload).await;
        let chunks = self.reply(c).await;
        Self::error_of(&chunks)
    }

    pub async fn write(&mut self, offset: u64, data: &[u8]) -> u32 {
        self.cmd(CMD_WRITE, 0, offset, data.len() as u32, data).await
    }

    pub async fn disconnect(mut self) -> S {
        let r = Request { flags: 0, kind: CMD_DISC, cookie: 0, offset: 0, len: 0 };
        self.s.write_all(&r.encode()).await.expect("write DISC");
        self.s.flush().await.expect("flush");
        self.s
    }
}

/// Bytes with a recognisable pattern.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1).collect()
}

/// A device over memory whose reads of chosen blocks wait until released.
#[derive(Debug)]
pub struct Gated {
    pub inner: Arc<MemoryDevice>,
    held: Mutex<HashSet<BlockId>>,
    arrived: Mutex<HashSet<BlockId>>,
    changed: Notify,
}

impl Gated {
    pub fn new(inner: Arc<MemoryDevice>) -> Self {
        Gated { inner, held: Mutex::default(), arrived: Mutex::default(), changed: Notify::new() }
    }

    pub fn hold(&self, b: u32) {
        self.held.lock().expect("lock").insert(BlockId(b));
    }

    pub fn release(&self, b: u32) {
        self.held.lock().expect("lock").remove(&BlockId(b));
        self.changed.notify_waiters();
    }

    pub async fn wait_arrived(&self, b: u32) {
        loop {
            let n = self.changed.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.arrived.lock().expect("lock").contains(&BlockId(b)) {
                return;
            }
            n.await;
        }
    }

    async fn pass(&self, b: BlockId) {
        self.arrived.lock().expect("lock").insert(b);
        self.changed.notify_waiters();
        loop {
            let n = self.changed.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if !self.held.lock().expect("lock").contains(&b) {
                return;
            }
            n.await;
        }
    }
}

#[async_trait]
impl BlockDevice for Gated {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }
    async fn read_block(&self, block: BlockId) -> Result<Bytes> {
        self.pass(block).await;
        self.inner.read_block(block).await
    }
    async fn write_block(&self, block: BlockId, data: Bytes) -> Result<()> {
        self.inner.write_block(block, data).await
    }
    async fn read_partial(&self, block: BlockId, offset: u32, len: usize) -> Result<Bytes> {
        self.pass(block).await;
        self.inner.read_partial(block, offset, len).await
    }
    async fn write_partial(&self, block: BlockId, offset: u32, data: Bytes) -> Result<()> {
        self.inner.write_partial(block, offset, data).await
    }
    async fn discard(&self, blocks: Range<u64>) -> Result<()> {
        self.inner.discard(blocks).await
    }
    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }
    async fn block_status(&self, blocks: Range<u64>) -> Result<Vec<(Range<u64>, Allocation)>> {
        // Everything is data here, so that reads reach the gate.
        s3block_core::check_block_range(&self.geometry(), &blocks)?;
        Ok(vec![(blocks, Allocation::Data)])
    }
}
