//! [`ObjectBlockDevice`]: a [`BlockDevice`] whose blocks are objects.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, GetRange, GetResult, ObjectStore, PutOptions,
};
use s3block_core::{
    BlockDevice, BlockId, Error, Geometry, GeometryCell, KeyLayout, RequestCounters, Result, check_block_len,
    check_block_range, is_zero, zeros,
};

use crate::codec::{CodecChain, CodecContext, CodecMeta};
use crate::error::{is_absent, store_error};
use crate::keys::key_path;
use crate::list::{ListPlan, StoredBlock, delete_keys, for_each_stored_block, list_blocks};
use crate::native::ChunkedXChaChaCodec;
use crate::offload::CodecSlots;
use crate::sidecar::StaleAttributes;
use crate::stored::StoredTally;

/// Content type of every block object (s3backer's).
pub const BLOCK_CONTENT_TYPE: &str = "application/x-s3backer-block";
/// Block 0 metadata: the block size, decimal.
pub const META_BLOCK_SIZE: &str = "s3backer-blocksize";
/// Block 0 metadata: the volume size in bytes, decimal.
pub const META_FILE_SIZE: &str = "s3backer-filesize";

/// Discards of at most this many blocks delete the keys directly; larger
/// ones list what exists first, so discarding a fresh volume costs a few
/// LISTs rather than a DELETE per block.
pub const DIRECT_DISCARD_MAX: u64 = 1000;

/// A block device over an object store, in s3backer's on-bucket format.
///
/// Each non-zero block is one object under [`KeyLayout`]'s key; an all-zero
/// block has none. Writes are one PUT each (an object is never half
/// written), so [`flush`](BlockDevice::flush) has nothing left to do.
#[derive(Debug, Clone)]
pub struct ObjectBlockDevice {
    store: Arc<dyn ObjectStore>,
    layout: KeyLayout,
    geometry: Arc<GeometryCell>,
    codecs: Arc<CodecChain>,
    counters: Arc<RequestCounters>,
    plan: ListPlan,
    stored: Arc<StoredTally>,
}

impl ObjectBlockDevice {
    /// A device over `store` with no compression, fresh counters and a
    /// one-range listing; see the `with_*` methods.
    pub fn new(store: Arc<dyn ObjectStore>, layout: KeyLayout, geometry: Geometry) -> Self {
        ObjectBlockDevice {
            store,
            layout,
            geometry: Arc::new(GeometryCell::new(geometry)),
            codecs: Arc::new(CodecChain::new()),
            counters: Arc::default(),
            plan: ListPlan { parallelism: 1, sorted: false },
            stored: Arc::default(),
        }
    }

    /// Sets the codecs blocks are written with.
    pub fn with_codecs(mut self, codecs: CodecChain) -> Self {
        self.codecs = Arc::new(codecs);
        self
    }

    /// Shares `counters` (the ones the store's counting layer adds to).
    pub fn with_counters(mut self, counters: Arc<RequestCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// Sets how listings are split.
    pub fn with_list_plan(mut self, plan: ListPlan) -> Self {
        self.plan = plan;
        self
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The key layout.
    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    /// The request counters.
    pub fn counters(&self) -> &Arc<RequestCounters> {
        &self.counters
    }

    /// The codecs blocks are written with.
    pub fn codecs(&self) -> &CodecChain {
        &self.codecs
    }

    /// The geometry, shared by this device's clones: a mount grows it in
    /// place (see [`GeometryCell`]), and block 0 is stored with its size.
    pub fn geometry_cell(&self) -> &Arc<GeometryCell> {
        &self.geometry
    }

    /// The objects and bytes stored, shared by this device's clones: it
    /// follows the blocks they store and delete once a baseline is
    /// started (see [`StoredTally`]).
    pub fn stored(&self) -> &Arc<StoredTally> {
        &self.stored
    }

    /// The object key of `block`.
    pub fn key(&self, block: BlockId) -> String {
        self.layout.key(block)
    }

    /// Stored blocks among `blocks`, with their object sizes, by block number.
    pub async fn list_blocks_in(&self, blocks: Range<u64>) -> Result<Vec<StoredBlock>> {
        check_block_range(&self.geometry.get(), &blocks)?;
        list_blocks(self.store.as_ref(), &self.layout, blocks, self.plan).await
    }

    /// Hands every stored block of the volume, with its object size, to
    /// `each` as the listing finds it, keeping none (see
    /// [`for_each_stored_block`](crate::for_each_stored_block)).
    pub async fn for_each_stored_block(&self, each: &(dyn Fn(StoredBlock) + Sync)) -> Result<()> {
        let blocks = 0..self.geometry.get().block_count();
        for_each_stored_block(self.store.as_ref(), &self.layout, blocks, self.plan, each).await
    }

    /// Every stored block of the volume, with its object size.
    pub async fn list_blocks(&self) -> Result<Vec<StoredBlock>> {
        self.list_blocks_in(0..self.geometry.get().block_count()).await
    }

    /// Deletes the objects of `blocks` in bulk (absent ones are fine).
    pub async fn delete_blocks(&self, blocks: impl IntoIterator<Item = BlockId>) -> Result<u64> {
        let blocks: Vec<BlockId> = blocks.into_iter().collect();
        let keys = blocks.iter().map(|&b| self.layout.key(b)).collect();
        let deleted = delete_keys(self.store.as_ref(), keys).await?;
        for b in blocks {
            self.stored.deleted(u64::from(b.0)..u64::from(b.0) + 1);
        }
        Ok(deleted)
    }

    /// Deletes every stored block; returns how many there were.
    pub async fn erase(&self) -> Result<u64> {
        let stored = self.list_blocks().await?;
        self.delete_blocks(stored.into_iter().map(|s| s.block)).await
    }

    fn path(&self, block: BlockId) -> Result<(String, Path)> {
        let key = self.layout.key(block);
        let path = key_path(&key)?;
        Ok((key, path))
    }

    /// True when blocks are written as they are (no compression, no
    /// encryption) and an object without a `Content-Encoding` is the block
    /// as it is: only then can a byte range of an object be a byte range of
    /// its block.
    pub fn writes_raw(&self) -> bool {
        !self.codecs.encodes() && self.codecs.default_encoding().is_none()
    }

    /// Reads `range` of `block` with one ranged GET. `Ok(None)` when the
    /// object cannot be read in part: it carries a `Content-Encoding` (an
    /// old compressed or encrypted block), is not one block long, or the
    /// store refused the range; the caller then reads it whole. An absent
    /// object reads as zeros.
    ///
    /// No whole-object check is skipped: a raw block carries none (only an
    /// encrypted object has an HMAC, and those are encoded, so read whole).
    pub async fn ranged_read(&self, block: BlockId, range: Range<usize>) -> Result<Option<Bytes>> {
        let geometry = self.geometry.get();
        geometry.check_block(block)?;
        geometry.check_in_block(range.start as u32, range.len())?;
        let (key, path) = self.path(block)?;
        let want = range.start as u64..range.end as u64;
        let res = match self.get_range(block, &key, &path, &want).await? {
            RangeGet::Got(res) => res,
            RangeGet::Absent => return Ok(Some(zeros(range.len()))),
            RangeGet::Refused => return Ok(None),
        };
        let encoded =
            res.attributes.get(&Attribute::ContentEncoding).is_some_and(|v| !v.as_ref().trim().is_empty());
        if encoded || res.meta.size != geometry.block_len() as u64 || res.range != want {
            return Ok(None);
        }
        let body = res.bytes().await.map_err(|e| self.corrupt_or_store(e, &key, block))?;
        Ok((body.len() == range.len()).then_some(body))
    }

    /// True when a part of a block can be read with one ranged GET: blocks
    /// are written raw ([`writes_raw`](Self::writes_raw)), or encrypted in
    /// chunks without compression ([`CodecChain::ranged_chunked`]).
    pub fn reads_ranges(&self) -> bool {
        self.writes_raw() || self.codecs.ranged_chunked().is_some()
    }

    /// Reads `range` of `block` on a volume that writes blocks encrypted in
    /// chunks without compression: one ranged GET of the chunks `range`
    /// falls in (chunk i of the block is at `i * (64 KiB + 16)` in its
    /// object), each authenticated and decrypted, then cut to `range`.
    /// `Ok(None)` when the object cannot be read so (another encoding, an
    /// object size other than a whole block gives, or the store refused the
    /// range); the caller then reads it whole. An absent object reads as
    /// zeros. Every byte returned was authenticated: a chunk that does not
    /// is a corrupt-block error, as a whole read would give.
    pub async fn chunked_ranged_read(&self, block: BlockId, range: Range<usize>) -> Result<Option<Bytes>> {
        let Some(codec) = self.codecs.ranged_chunked() else { return Ok(None) };
        let geometry = self.geometry.get();
        geometry.check_block(block)?;
        geometry.check_in_block(range.start as u32, range.len())?;
        if range.is_empty() {
            return Ok(Some(Bytes::new()));
        }
        let block_len = geometry.block_len();
        let sealed_chunk = ChunkedXChaChaCodec::SEALED_CHUNK as u64;
        let chunk = ChunkedXChaChaCodec::CHUNK_SIZE;
        let count = ChunkedXChaChaCodec::chunk_count(block_len);
        let object_len = ChunkedXChaChaCodec::sealed_len(block_len) as u64;
        let first = range.start / chunk;
        let last = (range.end - 1) / chunk;
        let (Ok(first_index), Ok(count)) = (u32::try_from(first), u32::try_from(count)) else {
            return Ok(None);
        };
        let want = first as u64 * sealed_chunk..((last as u64 + 1) * sealed_chunk).min(object_len);
        let (key, path) = self.path(block)?;
        let res = match self.get_range(block, &key, &path, &want).await? {
            RangeGet::Got(res) => res,
            RangeGet::Absent => return Ok(Some(zeros(range.len()))),
            RangeGet::Refused => return Ok(None),
        };
        let chunked = res
            .attributes
            .get(&Attribute::ContentEncoding)
            .is_some_and(|v| v.as_ref().trim().eq_ignore_ascii_case(ChunkedXChaChaCodec::NAME));
        if !chunked || res.meta.size != object_len || res.range != want {
            return Ok(None);
        }
        let cx = CodecContext { block, key: &key, block_size: block_len };
        let nonce = ChunkedXChaChaCodec::nonce_from_meta(&cx, &object_metadata(&res.attributes))?;
        let body = res.bytes().await.map_err(|e| self.corrupt_or_store(e, &key, block))?;
        if body.len() as u64 != want.end - want.start {
            return Ok(None);
        }
        let plain = codec.open_chunks(&cx, &nonce, first_index, count, &body)?;
        let start = range.start - first * chunk;
        match plain.get(start..start + range.len()) {
            Some(part) => Ok(Some(Bytes::copy_from_slice(part))),
            None => Err(cx.corrupt("authentication failed: the chunks read are shorter than the block")),
        }
    }

    /// One ranged GET of `want` in the object of `block`. A transient
    /// failure is an error; any other refusal (a range past the end of a
    /// short, compressed object) is [`RangeGet::Refused`], for good: the
    /// whole read that follows says what is wrong, if anything.
    async fn get_range(&self, block: BlockId, key: &str, path: &Path, want: &Range<u64>) -> Result<RangeGet> {
        let opts = GetOptions { range: Some(GetRange::Bounded(want.clone())), ..Default::default() };
        match self.store.get_opts(path, opts).await {
            Ok(r) => Ok(RangeGet::Got(r)),
            Err(e) if is_absent(&e) => Ok(RangeGet::Absent),
            Err(e) => {
                let err = self.corrupt_or_store(e, key, block);
                if err.is_transient() { Err(err) } else { Ok(RangeGet::Refused) }
            }
        }
    }

    fn corrupt_or_store(&self, e: object_store::Error, key: &str, block: BlockId) -> Error {
        if let object_store::Error::Generic { source, .. } = &e
            && let Some(stale) = source.downcast_ref::<StaleAttributes>()
        {
            return Error::Corrupt { block, key: key.to_owned(), reason: stale.to_string() };
        }
        store_error(e, key, Some(block))
    }
}

/// What one ranged GET of a block's object gave.
enum RangeGet {
    Got(GetResult),
    /// No object: the block reads as zeros.
    Absent,
    /// The store refused the range for good.
    Refused,
}

/// The largest object a block of `block_size` bytes can be stored as:
/// compression can grow incompressible data a little (zlib and zstd by
/// under 1%), encryption adds at most 40 bytes; twice the block and 64 KiB
/// leaves room for all of them.
pub(crate) fn max_object_size(block_size: usize) -> u64 {
    2 * block_size as u64 + (64 << 10)
}

/// The metadata attributes of an object (user metadata, without `x-amz-meta-`).
pub(crate) fn object_metadata(attrs: &Attributes) -> CodecMeta {
    attrs
        .iter()
        .filter_map(|(k, v)| match k {
            Attribute::Metadata(name) => Some((name.to_string(), v.as_ref().to_owned())),
            _ => None,
        })
        .collect()
}

#[async_trait]
impl BlockDevice for ObjectBlockDevice {
    fn geometry(&self) -> Geometry {
        self.geometry.get()
    }

    async fn read_block(&self, block: BlockId) -> Result<Bytes> {
        self.geometry.get().check_block(block)?;
        let (key, path) = self.path(block)?;
        let res = match self.store.get_opts(&path, GetOptions::default()).await {
            Ok(r) => r,
            Err(e) if is_absent(&e) => {
                return Ok(zeros(self.geometry.get().block_len()));
            }
            Err(e) => return Err(self.corrupt_or_store(e, &key, block)),
        };
        let cx = CodecContext { block, key: &key, block_size: self.geometry.get().block_len() };
        // Refused before its body is read: no encoding of a block is this large.
        let max = max_object_size(cx.block_size);
        if res.meta.size > max {
            return Err(cx.corrupt(format!(
                "the object is {} bytes, more than any encoding of a {}-byte block (at most {max})",
                res.meta.size, cx.block_size
            )));
        }
        let attributes = res.attributes.clone();
        let body = res.bytes().await.map_err(|e| self.corrupt_or_store(e, &key, block))?;
        let encoding = attributes.get(&Attribute::ContentEncoding).map(|v| v.as_ref().to_owned());
        let meta = object_metadata(&attributes);
        let block_size = cx.block_size;
        // As `CodecChain::decode` reads it: a blank header is no header.
        let named = encoding.as_deref().filter(|e| !e.trim().is_empty()).or(self.codecs.default_encoding());
        if named.is_none() {
            return self.codecs.decode(&cx, body, encoding.as_deref(), &meta);
        }
        let codecs = self.codecs.clone();
        CodecSlots::for_this_machine()
            .run(&format!("block {block} (key {key})"), move || {
                let cx = CodecContext { block, key: &key, block_size };
                codecs.decode(&cx, body, encoding.as_deref(), &meta)
            })
            .await
    }

    async fn write_block(&self, block: BlockId, data: Bytes) -> Result<()> {
        self.geometry.get().check_block(block)?;
        check_block_len(&self.geometry.get(), block, &data)?;
        if is_zero(&data) {
            return self.delete_blocks([block]).await.map(|_| ());
        }
        let (key, path) = self.path(block)?;
        let block_size = self.geometry.get().block_len();
        let (body, encoding, meta, key) = if !self.codecs.encodes() {
            let (body, encoding, meta) =
                self.codecs.encode(&CodecContext { block, key: &key, block_size }, data)?;
            (body, encoding, meta, key)
        } else {
            let codecs = self.codecs.clone();
            CodecSlots::for_this_machine()
                .run(&format!("block {block} (key {key})"), move || {
                    let (body, encoding, meta) =
                        codecs.encode(&CodecContext { block, key: &key, block_size }, data)?;
                    Ok((body, encoding, meta, key))
                })
                .await?
        };
        let mut attrs = Attributes::new();
        attrs.insert(Attribute::ContentType, AttributeValue::from(BLOCK_CONTENT_TYPE));
        if let Some(enc) = encoding {
            attrs.insert(Attribute::ContentEncoding, AttributeValue::from(enc));
        }
        for (k, v) in meta {
            attrs.insert(Attribute::Metadata(k.into()), AttributeValue::from(v));
        }
        if block.0 == 0 {
            attrs.insert(
                Attribute::Metadata(META_BLOCK_SIZE.into()),
                AttributeValue::from(self.geometry.get().block_size().to_string()),
            );
            attrs.insert(
                Attribute::Metadata(META_FILE_SIZE.into()),
                AttributeValue::from(self.geometry.get().size().to_string()),
            );
        }
        let opts = PutOptions { attributes: attrs, ..Default::default() };
        let len = body.len() as u64;
        self.store.put_opts(&path, body.into(), opts).await.map_err(|e| store_error(e, &key, Some(block)))?;
        self.stored.stored(block, len);
        Ok(())
    }

    /// On a volume that writes blocks raw, one ranged GET of the bytes asked
    /// for (see [`ObjectBlockDevice::ranged_read`]); on one that encrypts
    /// them in chunks without compression, one ranged GET of the chunks
    /// they fall in, authenticated (see
    /// [`ObjectBlockDevice::chunked_ranged_read`]); else, or when the object
    /// turns out to be encoded otherwise, the whole block, sliced.
    async fn read_partial(&self, block: BlockId, offset: u32, len: usize) -> Result<Bytes> {
        self.geometry.get().check_in_block(offset, len)?;
        let start = offset as usize;
        if len < self.geometry.get().block_len() {
            let part = if self.writes_raw() {
                self.ranged_read(block, start..start + len).await?
            } else if self.codecs.ranged_chunked().is_some() {
                self.chunked_ranged_read(block, start..start + len).await?
            } else {
                None
            };
            match part {
                Some(data) => return Ok(data),
                None if self.reads_ranges() => {
                    tracing::debug!(block = block.0, "the object is encoded otherwise: read whole")
                }
                None => {}
            }
        }
        let data = self.read_block(block).await?;
        Ok(data.slice(start..start + len))
    }

    /// True when blocks are written raw ([`ObjectBlockDevice::writes_raw`]),
    /// or encrypted in chunks without compression: a part of one is then
    /// one ranged GET of its bytes or of its chunks. A compressed volume, or
    /// one encrypted whole-object, reads whole objects, part or not.
    fn ranged_reads(&self) -> bool {
        self.reads_ranges()
    }

    async fn write_partial(&self, block: BlockId, offset: u32, data: Bytes) -> Result<()> {
        self.geometry.get().check_in_block(offset, data.len())?;
        let old = self.read_block(block).await?;
        let mut merged = old.to_vec();
        let start = offset as usize;
        merged[start..start + data.len()].copy_from_slice(&data);
        self.write_block(block, merged.into()).await
    }

    async fn discard(&self, blocks: Range<u64>) -> Result<()> {
        check_block_range(&self.geometry.get(), &blocks)?;
        if blocks.end - blocks.start <= DIRECT_DISCARD_MAX {
            let ids = blocks.map(|b| BlockId(b as u32));
            self.delete_blocks(ids).await?;
        } else {
            let stored = self.list_blocks_in(blocks.clone()).await?;
            self.delete_blocks(stored.into_iter().map(|s| s.block)).await?;
            self.stored.deleted(blocks);
        }
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::thread::ThreadId;

    use object_store::memory::InMemory;

    use super::*;
    use crate::codec::{Codec, Deflate};

    /// Reverses a block's bytes, and notes the thread each pass ran on.
    #[derive(Debug, Default)]
    struct Reverse {
        threads: Mutex<Vec<ThreadId>>,
    }

    impl Reverse {
        fn pass(&self, data: Bytes) -> Bytes {
            self.threads.lock().unwrap().push(std::thread::current().id());
            data.iter().rev().copied().collect::<Vec<u8>>().into()
        }
    }

    impl Codec for Reverse {
        fn name(&self) -> &str {
            "x-reverse"
        }

        fn encode(&self, _cx: &CodecContext<'_>, data: Bytes, _meta: &mut CodecMeta) -> Result<Bytes> {
            Ok(self.pass(data))
        }

        fn decode(&self, _cx: &CodecContext<'_>, data: Bytes, _meta: &CodecMeta) -> Result<Bytes> {
            Ok(self.pass(data))
        }
    }

    fn block() -> Bytes {
        (0..64u32 << 10).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_blocks_codec_passes_run_beside_the_runtime_and_round_trip() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let geometry = Geometry::new(1 << 20, 64 << 10).unwrap();
        let reverse = Arc::new(Reverse::default());
        let device = ObjectBlockDevice::new(store.clone(), KeyLayout::new("v/", false), geometry)
            .with_codecs(CodecChain::new().with(reverse.clone()));
        device.write_block(BlockId(3), block()).await.unwrap();
        let path = key_path(&device.key(BlockId(3))).unwrap();
        let stored = store.get_opts(&path, GetOptions::default()).await.unwrap().bytes().await.unwrap();
        assert_eq!(stored.first(), block().last(), "the object is the codec's output");
        assert_eq!(device.read_block(BlockId(3)).await.unwrap(), block());
        assert_eq!(device.read_partial(BlockId(3), 4096, 100).await.unwrap(), block().slice(4096..4196));
        let here = std::thread::current().id();
        let threads = reverse.threads.lock().unwrap().clone();
        assert_eq!(threads.len(), 3, "an encode and two decodes");
        assert!(threads.iter().all(|t| *t != here), "a pass ran on the runtime's thread: {threads:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_object_without_its_header_is_decoded_by_the_default_encoding() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let geometry = Geometry::new(1 << 20, 64 << 10).unwrap();
        let deflate = Deflate::new(6).unwrap();
        let cx = CodecContext { block: BlockId(1), key: "k", block_size: 64 << 10 };
        let packed = deflate.encode(&cx, block(), &mut CodecMeta::new()).unwrap();
        let device = ObjectBlockDevice::new(store.clone(), KeyLayout::new("v/", false), geometry)
            .with_codecs(CodecChain::new().with_default_encoding(Some(Deflate::NAME.into())));
        // No header, and a blank one: both read as the default.
        for (b, header) in [(1, None), (2, Some(" "))] {
            let mut attrs = Attributes::new();
            if let Some(h) = header {
                attrs.insert(Attribute::ContentEncoding, AttributeValue::from(h));
            }
            let path = key_path(&device.key(BlockId(b))).unwrap();
            let opts = PutOptions { attributes: attrs, ..Default::default() };
            store.put_opts(&path, packed.clone().into(), opts).await.unwrap();
            assert_eq!(device.read_block(BlockId(b)).await.unwrap(), block(), "block {b}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_corrupt_object_is_named_when_its_pass_ran_beside_the_runtime() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let geometry = Geometry::new(1 << 20, 64 << 10).unwrap();
        let device = ObjectBlockDevice::new(store.clone(), KeyLayout::new("v/", false), geometry)
            .with_codecs(CodecChain::new().with(Arc::new(Deflate::new(6).unwrap())));
        let key = device.key(BlockId(2));
        let mut attrs = Attributes::new();
        attrs.insert(Attribute::ContentEncoding, AttributeValue::from("deflate"));
        let opts = PutOptions { attributes: attrs, ..Default::default() };
        store.put_opts(&key_path(&key).unwrap(), Bytes::from_static(b"not zlib").into(), opts).await.unwrap();
        let err = device.read_block(BlockId(2)).await.unwrap_err();
        assert!(matches!(&err, Error::Corrupt { block: BlockId(2), key: k, .. } if *k == key), "{err}");
    }
}
