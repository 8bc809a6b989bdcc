//! Large buffers kept for reuse: GET bodies, and the copies of large writes
//! a frontend takes from the kernel.
//!
//! A body arrives in many chunks and is assembled into one buffer of the
//! object's size. Buffers of 512 KiB and more are mapped fresh from the
//! system and unmapped when freed (the daemons fix malloc's mmap threshold
//! there, [`BufferPool::POOLED_FROM`], so freed block buffers do not pile
//! up in its arenas), which makes every fetched block cost a page fault and
//! a zeroed page per 4 KiB before its bytes are copied in: a profile of a
//! cold sequential read of 1 MiB blocks put 14% of s3block's CPU there.
//! The same holds for the copy of a 1 MiB write the FUSE frontend takes
//! from the kernel's request buffer: a profile of a sequential write put
//! 98% of the daemon's page faults in that copy. A buffer filled here is
//! handed out as [`Bytes`] whose last owner gives the buffer back; the
//! next one of that size takes it instead of new memory. The pool keeps at
//! most [`BufferPool::limit`] bytes of idle buffers, so it adds a known
//! amount to the daemon's memory; a buffer that does not fit is freed as
//! before.
//!
//! Small blocks (4 KiB up to the mapping threshold) come from malloc's heap,
//! where each fetched block was placed among the short-lived allocations of
//! the requests in flight around it. When those were freed they left holes
//! between long-lived blocks that no block fits: at 4 KiB blocks with a
//! 64 MiB cache, a cold read left 21 MB of the heap free but kept, a fifth
//! of the daemon's memory. A pool made [`BufferPool::for_blocks`] (the one
//! GET bodies are read into) takes the buffers of whole small objects in
//! batches of up to 256 KiB, made one after another so that they sit
//! together, and keeps the freed ones for the next blocks (within its
//! limit). The same read then peaked 17 MB lower.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Idle large buffers, bounded in bytes: a GET body or a large write
/// copied into one comes out as [`Bytes`] that gives the buffer back when
/// its last owner drops it, and the next of the same size reuses it.
///
/// ```
/// use s3block_store::BufferPool;
///
/// let pool = BufferPool::new(BufferPool::DEFAULT_LIMIT);
/// let write = pool.copy_from_slice(&vec![7u8; 1 << 20]);
/// let at = write.as_ptr();
/// drop(write);
/// assert_eq!(pool.idle_bytes(), 1 << 20);
/// let next = pool.copy_from_slice(&vec![8u8; 1 << 20]);
/// assert_eq!(next.as_ptr(), at, "the freed buffer is taken again");
/// assert!(next.iter().all(|&b| b == 8));
/// ```
#[derive(Debug)]
pub struct BufferPool {
    limit: usize,
    /// Pools the buffers of small blocks too, made in batches.
    small_blocks: bool,
    idle: Mutex<Idle>,
}

#[derive(Debug, Default)]
struct Idle {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
    reused: u64,
}

impl BufferPool {
    /// The smallest buffer pooled (but see [`for_blocks`](Self::for_blocks)
    /// for small blocks): 512 KiB. The daemons give malloc the
    /// same threshold for a mapping of its own, so smaller buffers come from
    /// its heap, where reuse costs no page fault, and a pool would only add
    /// idle memory: pooling write copies from 64 KiB, the copy of 230 MB of
    /// files under ext4 with a 16 MiB cache was killed in its 40 MiB memory
    /// cgroup.
    pub const POOLED_FROM: usize = 512 * 1024;

    /// Idle buffers a pool keeps by default: 2 MiB, two buffers of 1 MiB
    /// or four of 512 KiB. A sequential read or write needs about one: each
    /// block that enters the cache evicts one whose buffer the next takes.
    pub const DEFAULT_LIMIT: usize = 2 * 1024 * 1024;

    /// The smallest block whose buffer a pool made
    /// [`for_blocks`](Self::for_blocks) takes from its batches: 4 KiB, the
    /// smallest block size in use (smaller objects are the volume's
    /// metadata, read a few times per mount).
    pub const SMALL_BLOCKS_FROM: usize = 4 * 1024;

    /// The most bytes of small block buffers made at once: 256 KiB, 64
    /// buffers of 4 KiB, 4 of 64 KiB, one of 256 KiB.
    pub const BATCH_BYTES: usize = 256 * 1024;

    /// A pool keeping at most `limit` bytes of idle buffers. Buffers larger
    /// than `limit` are never pooled.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(BufferPool { limit, small_blocks: false, idle: Mutex::new(Idle::default()) })
    }

    /// A pool for the blocks read from a store: as [`new`](Self::new), and
    /// the buffer of a whole object from
    /// [`SMALL_BLOCKS_FROM`](Self::SMALL_BLOCKS_FROM) bytes up is taken from
    /// the pool too. When none of its size is idle, a batch of up to
    /// [`BATCH_BYTES`](Self::BATCH_BYTES) is made at once (within the idle
    /// limit), so the blocks of a read sit together in the heap instead of
    /// among the requests' short-lived allocations.
    pub fn for_blocks(limit: usize) -> Arc<Self> {
        Arc::new(BufferPool { limit, small_blocks: true, idle: Mutex::new(Idle::default()) })
    }

    /// The most bytes of idle buffers kept.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes of idle buffers held now.
    pub fn idle_bytes(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }

    /// True when a buffer of `len` bytes is taken from (and given back to)
    /// the pool: [`POOLED_FROM`](Self::POOLED_FROM) bytes or more, and no
    /// more than the pool's limit.
    fn pools(&self, len: usize) -> bool {
        (Self::POOLED_FROM..=self.limit).contains(&len)
    }

    /// True when the buffer of a whole object (a block) of `len` bytes is
    /// taken from (and given back to) the pool: as [`pools`](Self::pools),
    /// and from [`SMALL_BLOCKS_FROM`](Self::SMALL_BLOCKS_FROM) bytes in a
    /// pool made [`for_blocks`](Self::for_blocks).
    fn pools_block(&self, len: usize) -> bool {
        let from = if self.small_blocks { Self::SMALL_BLOCKS_FROM } else { Self::POOLED_FROM };
        (from..=self.limit).contains(&len)
    }

    /// How many buffers were taken from the pool rather than allocated.
    pub fn reused(&self) -> u64 {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).reused
    }

    /// An empty buffer that holds `len` bytes: an idle one of exactly that
    /// capacity if the pool has it, else a new one.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // The newest first: a batch's buffers, and the sizes in use now.
        if let Some(i) = idle.buffers.iter().rposition(|b| b.capacity() == len) {
            let mut buf = idle.buffers.swap_remove(i);
            idle.bytes -= len;
            idle.reused += 1;
            buf.clear();
            return buf;
        }
        let batch = if self.small_blocks && len < Self::POOLED_FROM {
            let room = self.limit.saturating_sub(idle.bytes) / len;
            (Self::BATCH_BYTES / len).min(room + 1).max(1)
        } else {
            1
        };
        drop(idle);
        if batch == 1 {
            return Vec::with_capacity(len);
        }
        // Made here, one after another, outside the lock: malloc places
        // them together.
        let mut made: Vec<Vec<u8>> = (0..batch).map(|_| Vec::with_capacity(len)).collect();
        let buf = made.pop().unwrap_or_else(|| Vec::with_capacity(len));
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        for spare in made {
            if idle.bytes + len > self.limit {
                break;
            }
            idle.bytes += len;
            idle.buffers.push(spare);
        }
        buf
    }

    /// Keeps `buf` for a later body if the pool has room for it.
    fn give_back(&self, buf: Vec<u8>) {
        let cap = buf.capacity();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.bytes + cap > self.limit {
            // Make room by dropping the buffers of other sizes first: the
            // sizes asked for now are the ones worth keeping.
            while idle.bytes + cap > self.limit {
                match idle.buffers.iter().position(|b| b.capacity() != cap) {
                    Some(i) => {
                        let old = idle.buffers.swap_remove(i);
                        idle.bytes -= old.capacity();
                    }
                    None => return,
                }
            }
        }
        idle.bytes += cap;
        idle.buffers.push(buf);
    }

    /// `data` in a buffer of its own: one taken from the pool when `data` is
    /// [`POOLED_FROM`](Self::POOLED_FROM) bytes or more and fits the pool's
    /// limit, given back when the last [`Bytes`] pointing into it is dropped.
    pub fn copy_from_slice(self: &Arc<Self>, data: &[u8]) -> Bytes {
        self.copy_pooled(data, self.pools(data.len()))
    }

    /// `data` in a buffer of its own, from the pool when `pooled`.
    fn copy_pooled(self: &Arc<Self>, data: &[u8], pooled: bool) -> Bytes {
        if !pooled {
            return Bytes::copy_from_slice(data);
        }
        let mut buf = self.take(data.len());
        buf.extend_from_slice(data);
        Bytes::from_owner(Pooled { buf, pool: Arc::clone(self) })
    }

    /// One buffer holding `chunks` in order, taken from the pool when the
    /// body is [`POOLED_FROM`](Self::POOLED_FROM) bytes or more. A body of
    /// one chunk is copied too, into a buffer of its own size.
    #[cfg(test)]
    pub(crate) fn assemble(self: &Arc<Self>, chunks: Vec<Bytes>) -> Bytes {
        let len = chunks.iter().map(Bytes::len).sum();
        let mut body = Body::new(self, len, BodyOf::Part);
        for c in chunks {
            body.push(c);
        }
        body.finish()
    }

    /// Reads the body `stream`, of `len` bytes by its headers, into one
    /// buffer. Each chunk is copied as it arrives and dropped at once, so
    /// the HTTP client's read buffer, no longer shared, is read into again
    /// instead of a new one. A stream longer or shorter than `len` is read
    /// whole all the same: what it holds is checked above. `of` says what
    /// the body is, and so how its buffer is kept ([`BodyOf`]).
    pub(crate) async fn read<E>(
        self: &Arc<Self>,
        len: u64,
        of: BodyOf,
        mut stream: impl futures::Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> Result<Bytes, E> {
        use futures::StreamExt;
        let mut body = Body::new(self, usize::try_from(len).unwrap_or(0), of);
        while let Some(chunk) = stream.next().await {
            body.push(chunk?);
        }
        Ok(body.finish())
    }
}

/// What a GET body is, which says how its buffer is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyOf {
    /// Part of an object (a ranged read): pooled only from
    /// [`BufferPool::POOLED_FROM`] bytes, as any buffer.
    Part,
    /// A whole object (a block): pooled as [`BufferPool::for_blocks`] says.
    Object,
    /// A whole object from a store whose bodies are the objects it holds
    /// (the memory store): a body that comes in one chunk is kept as it
    /// came, not copied, since that chunk keeps nothing else alive.
    KeptObject,
}

/// A body being assembled: its first chunk kept as it came, then, from the
/// second on, all of them copied into one buffer.
struct Body<'a> {
    pool: &'a Arc<BufferPool>,
    expected: usize,
    first: Option<Bytes>,
    buf: Option<Vec<u8>>,
    of: BodyOf,
}

impl<'a> Body<'a> {
    fn new(pool: &'a Arc<BufferPool>, expected: usize, of: BodyOf) -> Self {
        Body { pool, expected, first: None, buf: None, of }
    }

    fn pooled(&self) -> bool {
        match self.of {
            BodyOf::Part => self.pool.pools(self.expected),
            BodyOf::Object | BodyOf::KeptObject => self.pool.pools_block(self.expected),
        }
    }

    fn push(&mut self, chunk: Bytes) {
        if let Some(buf) = &mut self.buf {
            buf.extend_from_slice(&chunk);
            return;
        }
        let Some(first) = self.first.take() else {
            self.first = Some(chunk);
            return;
        };
        let len = self.expected.max(first.len() + chunk.len());
        // A body longer than its headers said gets a buffer of its own.
        let pooled = self.pooled() && len == self.expected;
        let mut buf = if pooled { self.pool.take(len) } else { Vec::with_capacity(len) };
        buf.extend_from_slice(&first);
        buf.extend_from_slice(&chunk);
        self.buf = Some(buf);
    }

    fn finish(self) -> Bytes {
        let pooled = self.pooled();
        match (self.buf, self.first) {
            (Some(buf), _) if pooled && buf.capacity() == self.expected => {
                Bytes::from_owner(Pooled { buf, pool: Arc::clone(self.pool) })
            }
            (Some(buf), _) => Bytes::from(buf),
            // A body that came in one chunk is a slice of the HTTP client's
            // read buffer, which may be many times its size: kept as it is,
            // a cached 4 KiB block would keep that whole buffer alive, out
            // of the cache's count of bytes. It is copied into its own.
            (None, Some(first)) if self.of == BodyOf::KeptObject => first,
            (None, Some(first)) => {
                let pooled = pooled && first.len() == self.expected;
                self.pool.copy_pooled(&first, pooled)
            }
            (None, None) => Bytes::new(),
        }
    }
}

/// A body's buffer, given back to its pool when the last [`Bytes`] that
/// points into it is dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(len: usize, fill: u8) -> Vec<Bytes> {
        let data: Vec<u8> = (0..len).map(|i| fill.wrapping_add((i % 251) as u8)).collect();
        data.chunks(16 * 1024).map(Bytes::copy_from_slice).collect()
    }

    fn joined(c: &[Bytes]) -> Vec<u8> {
        c.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn a_freed_body_buffer_is_reused_by_the_next_body_of_its_size() {
        let pool = BufferPool::new(BufferPool::DEFAULT_LIMIT);
        let first = chunks(1 << 20, 1);
        let body = pool.assemble(first.clone());
        assert_eq!(&body[..], &joined(&first)[..]);
        let ptr = body.as_ptr();
        let slice = body.slice(10..20);
        drop(body);
        assert_eq!(pool.idle_bytes(), 0, "a slice still holds the buffer");
        drop(slice);
        assert_eq!(pool.idle_bytes(), 1 << 20);

        let second = chunks(1 << 20, 7);
        let body = pool.assemble(second.clone());
        assert_eq!(body.as_ptr(), ptr, "the freed buffer was not reused");
        assert_eq!(&body[..], &joined(&second)[..], "the reused buffer holds the new body only");
        assert_eq!(pool.reused(), 1);
        assert_eq!(pool.idle_bytes(), 0);

        // A body of another size does not take a buffer of the wrong size.
        let other = pool.assemble(chunks(512 * 1024, 3));
        assert_eq!(other.len(), 512 * 1024);
        assert_eq!(pool.reused(), 1);
    }

    #[test]
    fn idle_buffers_stay_within_the_limit_keeping_the_latest_size() {
        let pool = BufferPool::new(2 << 20);
        let bodies: Vec<Bytes> = (0..5).map(|i| pool.assemble(chunks(1 << 20, i))).collect();
        drop(bodies);
        assert_eq!(pool.idle_bytes(), 2 << 20, "5 MiB freed into a 2 MiB pool");
        assert!(pool.idle_bytes() <= pool.limit());

        let small: Vec<Bytes> = (0..4).map(|i| pool.assemble(chunks(512 * 1024, i))).collect();
        assert_eq!(pool.reused(), 0);
        drop(small);
        // The 512 KiB buffers pushed the 1 MiB ones out rather than being dropped.
        assert_eq!(pool.idle_bytes(), 2 << 20);
        let again = pool.assemble(chunks(512 * 1024, 9));
        assert_eq!(pool.reused(), 1);
        drop(again);
        let big = pool.assemble(chunks(1 << 20, 9));
        assert_eq!(pool.reused(), 1, "no 1 MiB buffer should be left");
        drop(big);
    }

    /// A chunk that counts its drop.
    struct Counted(Vec<u8>, Arc<std::sync::atomic::AtomicUsize>);

    impl AsRef<[u8]> for Counted {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_streamed_body_drops_each_chunk_once_copied_and_reuses_buffers() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pool = BufferPool::new(BufferPool::DEFAULT_LIMIT);
        let data = joined(&chunks(1 << 20, 4));
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut lag = 0;
        let mut ptr = None;
        for pass in 0..2 {
            dropped.store(0, Ordering::SeqCst);
            let pieces: Vec<Bytes> = data
                .chunks(40_000)
                .map(|c| Bytes::from_owner(Counted(c.to_vec(), dropped.clone())))
                .collect();
            let n = pieces.len();
            let stream = futures::stream::iter(pieces.into_iter().enumerate().map(|(i, c)| {
                // When chunk i is handed over, all before it but the first
                // two at most are gone.
                lag = lag.max(i.saturating_sub(dropped.load(Ordering::SeqCst)));
                Ok::<_, std::io::Error>(c)
            }));
            let body = pool.read(data.len() as u64, BodyOf::Object, stream).await.unwrap();
            assert_eq!(&body[..], &data[..]);
            assert_eq!(dropped.load(Ordering::SeqCst), n, "every chunk dropped");
            match pass {
                0 => ptr = Some(body.as_ptr()),
                _ => assert_eq!(Some(body.as_ptr()), ptr, "the second body did not reuse the first's buffer"),
            }
        }
        assert!(lag <= 2, "chunks were held {lag} behind the one arriving");
        assert_eq!(pool.reused(), 1);
    }

    #[tokio::test]
    async fn streamed_bodies_of_another_length_or_failing_midway() {
        let pool = BufferPool::new(BufferPool::DEFAULT_LIMIT);
        let data = joined(&chunks(200_000, 8));
        let pieces = || {
            data.chunks(30_000).map(Bytes::copy_from_slice).map(Ok::<_, std::io::Error>).collect::<Vec<_>>()
        };
        // Longer and shorter than the headers said: read whole all the same.
        for said in [100_000u64, 300_000, 0] {
            let body = pool.read(said, BodyOf::Object, futures::stream::iter(pieces())).await.unwrap();
            assert_eq!(&body[..], &data[..], "said {said}");
        }
        let mut failing = pieces();
        failing[3] = Err(std::io::Error::other("reset"));
        let err = pool.read(200_000, BodyOf::Object, futures::stream::iter(failing)).await.unwrap_err();
        assert_eq!(err.to_string(), "reset");
        let one = pool.read(
            5,
            BodyOf::Object,
            futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"hello"))]),
        );
        assert_eq!(&one.await.unwrap()[..], b"hello");
    }

    #[test]
    fn large_copies_reuse_freed_buffers_and_small_or_oversized_ones_do_not() {
        let pool = BufferPool::new(BufferPool::DEFAULT_LIMIT);
        let data: Vec<u8> = (0..1 << 20).map(|i| (i % 253) as u8).collect();
        let copy = pool.copy_from_slice(&data);
        assert_eq!(&copy[..], &data[..]);
        let ptr = copy.as_ptr();
        let block = copy.slice(256 * 1024..512 * 1024);
        drop(copy);
        assert_eq!(pool.idle_bytes(), 0, "a block's slice still holds the write's buffer");
        drop(block);
        assert_eq!(pool.idle_bytes(), 1 << 20);
        let again = pool.copy_from_slice(&data[..1 << 20]);
        assert_eq!((again.as_ptr(), pool.reused()), (ptr, 1), "the freed buffer was not taken");
        assert_eq!(&again[..], &data[..]);
        drop(again);
        // Below 512 KiB, and above the pool's limit: plain copies, never kept.
        let small = pool.copy_from_slice(&data[..256 * 1024]);
        let huge = BufferPool::new(512 * 1024).copy_from_slice(&data);
        assert_eq!((&small[..], &huge[..]), (&data[..256 * 1024], &data[..]));
        drop((small, huge));
        assert_eq!((pool.idle_bytes(), pool.reused()), (1 << 20, 1));
    }

    #[test]
    fn small_bodies_bypass_the_pool_and_one_chunk_bodies_let_go_of_their_buffer() {
        let pool = BufferPool::new(BufferPool::DEFAULT_LIMIT);
        let small = chunks(32 * 1024, 2);
        let body = pool.assemble(small.clone());
        assert_eq!(&body[..], &joined(&small)[..]);
        drop(body);
        assert_eq!(pool.idle_bytes(), 0);
        // A 4 KiB body read into a 64 KiB buffer, as an HTTP client's read
        // buffer holds it: the body must not keep the buffer alive.
        use std::sync::atomic::{AtomicUsize, Ordering};
        let freed = Arc::new(AtomicUsize::new(0));
        let buffer = Bytes::from_owner(Counted(vec![5u8; 64 * 1024], freed.clone()));
        let body = pool.assemble(vec![buffer.slice(1000..1000 + 4096)]);
        drop(buffer);
        assert_eq!(freed.load(Ordering::SeqCst), 1, "the 4 KiB body still holds the 64 KiB buffer");
        assert_eq!(&body[..], &[5u8; 4096][..]);
        // A whole block in one chunk: copied into a pooled buffer, given back.
        let one = Bytes::from(vec![6u8; 1 << 20]);
        let body = pool.assemble(vec![one.clone()]);
        assert_ne!(body.as_ptr(), one.as_ptr(), "a one-chunk body is copied");
        assert_eq!(body, one);
        drop(body);
        assert_eq!(pool.idle_bytes(), 1 << 20);
        assert!(pool.assemble(Vec::new()).is_empty());
    }

    #[tokio::test]
    async fn small_blocks_take_buffers_made_in_batches_within_the_limit() {
        let block = Bytes::from(vec![9u8; 4096]);
        let once = || futures::stream::iter([Ok::<_, std::io::Error>(block.clone())]);
        let pool = BufferPool::for_blocks(BufferPool::DEFAULT_LIMIT);
        let first = pool.read(4096, BodyOf::Object, once()).await.unwrap();
        assert_eq!(first, block);
        assert_ne!(first.as_ptr(), block.as_ptr(), "a block from a client's buffer is copied");
        // One batch of 256 KiB was made: 63 buffers wait for the next blocks.
        assert_eq!(pool.idle_bytes(), BufferPool::BATCH_BYTES - 4096);
        let mut held = vec![first];
        for _ in 0..63 {
            held.push(pool.read(4096, BodyOf::Object, once()).await.unwrap());
        }
        assert_eq!((pool.idle_bytes(), pool.reused()), (0, 63));
        assert!(held.iter().all(|b| *b == block));
        // Evicted blocks give their buffers back for the next ones.
        drop(held);
        assert_eq!(pool.idle_bytes(), 64 * 4096);
        let again = pool.read(4096, BodyOf::Object, once()).await.unwrap();
        assert_eq!((pool.idle_bytes(), pool.reused()), (63 * 4096, 64));
        drop(again);
        // Parts of objects, bodies longer than said, and objects below 4 KiB
        // are copied as before.
        let two =
            || futures::stream::iter([Ok::<_, std::io::Error>(block.slice(..1000)), Ok(block.slice(1000..))]);
        let part = pool.read(4096, BodyOf::Part, once()).await.unwrap();
        let longer = pool.read(2048, BodyOf::Object, two()).await.unwrap();
        let tiny = pool.read(
            100,
            BodyOf::Object,
            futures::stream::iter([Ok::<_, std::io::Error>(block.slice(..100))]),
        );
        let tiny = tiny.await.unwrap();
        assert_eq!((&part[..], &longer[..], &tiny[..]), (&block[..], &block[..], &block[..100]));
        drop((part, longer, tiny));
        assert_eq!((pool.idle_bytes(), pool.reused()), (64 * 4096, 64));
        // A body of several chunks of the size said takes a pooled buffer.
        let assembled = pool.read(4096, BodyOf::Object, two()).await.unwrap();
        assert_eq!((assembled, pool.idle_bytes()), (block.clone(), 63 * 4096));

        // The idle buffers stay within the limit, however many a batch holds.
        let small = BufferPool::for_blocks(16 * 1024);
        let held: Vec<Bytes> =
            futures::future::join_all((0..3).map(|_| small.read(4096, BodyOf::Object, once())))
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
        assert_eq!(small.idle_bytes(), 16 * 1024 - 2 * 4096, "a batch of 5: one used, 4 idle, then 2 taken");
        drop(held);
        assert_eq!(small.idle_bytes(), 16 * 1024, "idle buffers past the limit are freed");

        // A pool not made for blocks (the copies of writes) makes no batches.
        let writes = BufferPool::new(BufferPool::DEFAULT_LIMIT);
        drop(writes.read(4096, BodyOf::Object, once()).await.unwrap());
        assert_eq!(writes.idle_bytes(), 0);
    }

    #[tokio::test]
    async fn a_one_chunk_body_is_kept_as_it_came_only_when_asked() {
        let pool = BufferPool::new(BufferPool::DEFAULT_LIMIT);
        let one = Bytes::from(vec![6u8; 1 << 20]);
        let once = || futures::stream::iter([Ok::<_, std::io::Error>(one.clone())]);
        let kept = pool.read(1 << 20, BodyOf::KeptObject, once()).await.unwrap();
        assert_eq!(kept.as_ptr(), one.as_ptr(), "the one chunk was copied");
        let copied = pool.read(1 << 20, BodyOf::Object, once()).await.unwrap();
        assert_ne!(copied.as_ptr(), one.as_ptr(), "the one chunk was kept");
        assert_eq!((kept, copied), (one.clone(), one.clone()));
        // Two chunks are assembled whatever was asked.
        let two = futures::stream::iter([Ok::<_, std::io::Error>(one.slice(..1000)), Ok(one.slice(1000..))]);
        let body = pool.read(1 << 20, BodyOf::KeptObject, two).await.unwrap();
        assert_ne!(body.as_ptr(), one.as_ptr());
        assert_eq!(body, one);
    }
}
