//! An `ObjectStore` wrapper that counts requests and bytes into the shared
//! [`RequestCounters`]: what the user is billed for.
//!
//! It sits below the retry layer, so each attempt counts as the request it
//! is. A HEAD counts as a GET; a copy as a PUT; a rename as a PUT and a
//! DELETE. A bulk delete counts one request per 1000 keys (what S3's
//! multi-object delete takes) and every key as a delete. A listing counts
//! one request per 1000 objects returned, the S3 page size.
//!
//! Each request is also classed by its key ([`class_of`]): a block object
//! (its key ends in eight hex digits) or another object (the lock, the
//! descriptor, a probe), so the stats can say what every request was for.
//!
//! Each request's latency goes into its method's histogram: from the call
//! until the answer, or for a GET until its body was read (or dropped),
//! for a listing until its last page; a failed attempt too.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use s3block_core::{FetchReason, RequestClass, RequestCounters, RequestMethod, fetch_reason};

use crate::lock::LOCK_NAME;
use crate::volume::DESCRIPTOR_NAME;

/// Keys per S3 multi-object delete request and objects per LIST page.
pub(crate) const PAGE: u64 = 1000;

/// Whether `key` names a block object: it ends in eight hex digits (plain
/// `{prefix}{block:08x}` or hashed `{prefix}{hash:08x}-{block:08x}`) and is
/// not one of the volume's other objects.
fn is_block_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() >= 8
        && b[b.len() - 8..].iter().all(u8::is_ascii_hexdigit)
        && !key.ends_with(LOCK_NAME)
        && !key.ends_with(DESCRIPTOR_NAME)
        && !key.contains("s3block-probe-")
}

/// The class of a request of `method` on `key`.
fn class_of(method: Method, key: &str) -> RequestClass {
    let block = is_block_key(key);
    match (method, block) {
        (Method::Get, true) => RequestClass::BlockGet,
        (Method::Get, false) => RequestClass::MetadataGet,
        (Method::Put, true) => RequestClass::BlockPut,
        (Method::Put, false) => RequestClass::MetadataPut,
        (Method::Delete, true) => RequestClass::BlockDelete,
        (Method::Delete, false) => RequestClass::MetadataDelete,
    }
}

/// The request methods [`class_of`] tells apart (LIST has no key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// GET or HEAD.
    Get,
    /// PUT or copy.
    Put,
    /// DELETE (single or bulk).
    Delete,
}

/// Times one request from its creation until it is dropped, into its
/// method's latency histogram: moved into a response body's stream, it
/// times the request until the body was read.
struct Timed {
    counters: Arc<RequestCounters>,
    method: RequestMethod,
    started: Instant,
}

impl Timed {
    fn start(counters: &Arc<RequestCounters>, method: RequestMethod) -> Self {
        Timed { counters: counters.clone(), method, started: Instant::now() }
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        self.counters.observe_latency(self.method, self.started.elapsed());
    }
}

/// Counts every request to `T` into shared counters.
#[derive(Debug)]
pub struct CountingStore<T> {
    inner: T,
    counters: Arc<RequestCounters>,
}

impl<T: ObjectStore> CountingStore<T> {
    /// Wraps `inner`, adding to `counters`.
    pub fn new(inner: T, counters: Arc<RequestCounters>) -> Self {
        CountingStore { inner, counters }
    }

    /// The shared counters.
    pub fn counters(&self) -> &Arc<RequestCounters> {
        &self.counters
    }

    fn count_list(
        &self,
        s: BoxStream<'static, Result<ObjectMeta>>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let counters = self.counters.clone();
        counters.count(RequestClass::List, 1);
        let timed = Timed::start(&counters, RequestMethod::List);
        let mut n = 0u64;
        s.inspect(move |_| {
            let _ = &timed;
            n += 1;
            if n.is_multiple_of(PAGE) {
                counters.count(RequestClass::List, 1);
            }
        })
        .boxed()
    }
}

impl<T: fmt::Display> fmt::Display for CountingStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountingStore({})", self.inner)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<T: ObjectStore> ObjectStore for CountingStore<T> {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.counters.count(class_of(Method::Put, location.as_ref()), 1);
        self.counters.add_bytes_sent(payload.content_length() as u64);
        let _timed = Timed::start(&self.counters, RequestMethod::Put);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.counters.count(class_of(Method::Put, location.as_ref()), 1);
        let _timed = Timed::start(&self.counters, RequestMethod::Put);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        // A HEAD reads an object's metadata (block 0's geometry at open),
        // never a block's data.
        let class =
            if options.head { RequestClass::MetadataGet } else { class_of(Method::Get, location.as_ref()) };
        self.counters.count(class, 1);
        let block_get = class == RequestClass::BlockGet;
        if block_get && options.range.is_some() {
            self.counters.add_ranged_gets(1);
        }
        // The bytes of a block a reader waits for, apart: per read miss.
        let for_reader = block_get && fetch_reason() == FetchReason::Demand;
        let timed = Timed::start(&self.counters, RequestMethod::Get);
        let mut res = self.inner.get_opts(location, options).await?;
        let counters = self.counters.clone();
        let received = move |n: u64| {
            counters.add_bytes_received(n);
            if for_reader {
                counters.add_fetch_bytes_received(n);
            }
        };
        res.payload = match res.payload {
            GetResultPayload::Stream(s) => GetResultPayload::Stream(
                s.inspect(move |chunk| {
                    let _ = &timed;
                    if let Ok(b) = chunk {
                        received(b.len() as u64);
                    }
                })
                .boxed(),
            ),
            GetResultPayload::File(file, path) => {
                received(res.range.end.saturating_sub(res.range.start));
                GetResultPayload::File(file, path)
            }
        };
        Ok(res)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.counters.count(class_of(Method::Get, location.as_ref()), ranges.len() as u64);
        let _timed = Timed::start(&self.counters, RequestMethod::Get);
        let out = self.inner.get_ranges(location, ranges).await?;
        self.counters.add_bytes_received(out.iter().map(|b| b.len() as u64).sum());
        Ok(out)
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let counters = self.counters.clone();
        let timed = Timed::start(&counters, RequestMethod::Delete);
        let mut n = 0u64;
        let counted = locations
            .inspect(move |p| {
                let _ = &timed;
                if let Ok(path) = p {
                    if n.is_multiple_of(PAGE) {
                        counters.count(class_of(Method::Delete, path.as_ref()), 1);
                    }
                    n += 1;
                    counters.add_deletes(1);
                }
            })
            .boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let s = self.inner.list(prefix);
        self.count_list(s)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let s = self.inner.list_with_offset(prefix, offset);
        self.count_list(s)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.counters.count(RequestClass::List, 1);
        let _timed = Timed::start(&self.counters, RequestMethod::List);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.counters.count(class_of(Method::Put, to.as_ref()), 1);
        let _timed = Timed::start(&self.counters, RequestMethod::Put);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.counters.count(class_of(Method::Put, to.as_ref()), 1);
        self.counters.count(class_of(Method::Delete, from.as_ref()), 1);
        self.counters.add_deletes(1);
        let _timed = Timed::start(&self.counters, RequestMethod::Put);
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_classed_as_blocks_or_volume_objects() {
        for key in ["00000000", "vol/0000001f", "p-1a2b3c4d-000000ff", "abc00000001"] {
            assert!(is_block_key(key), "{key}");
        }
        for key in [
            "vol/s3backer-mounted",
            "vol/s3block-volume.json",
            "vol/s3block-probe-0123456789abcdef",
            "vol/",
            "ab",
        ] {
            assert!(!is_block_key(key), "{key}");
        }
        assert_eq!(class_of(Method::Put, "v/00000001"), RequestClass::BlockPut);
        assert_eq!(class_of(Method::Delete, "v/s3backer-mounted"), RequestClass::MetadataDelete);
    }

    /// Opening a volume HEADs block 0 for its geometry: not a block fetch.
    #[tokio::test]
    async fn a_head_of_a_block_is_metadata_and_a_get_is_a_fetch() {
        use object_store::ObjectStoreExt;
        let counters = Arc::new(RequestCounters::default());
        let store = CountingStore::new(object_store::memory::InMemory::new(), counters.clone());
        let key = Path::from("v/00000000");
        store.put(&key, vec![1u8; 8].into()).await.expect("put");
        store.get_opts(&key, GetOptions { head: true, ..Default::default() }).await.expect("head");
        let after_head = counters.snapshot();
        assert_eq!((after_head.metadata_gets, after_head.block_fetches), (1, 0));
        store.get(&key).await.expect("get").bytes().await.expect("body");
        assert_eq!(counters.snapshot().block_fetches, 1);
    }

    /// A ranged GET of a block is counted as one, and the bytes a reader
    /// waits for apart from those fetched ahead.
    #[tokio::test]
    async fn ranged_gets_and_the_bytes_readers_wait_for_are_counted() {
        use object_store::{GetRange, ObjectStoreExt};
        use s3block_core::with_fetch_reason;
        let counters = Arc::new(RequestCounters::default());
        let store = Arc::new(CountingStore::new(object_store::memory::InMemory::new(), counters.clone()));
        let key = Path::from("v/00000002");
        store.put(&key, vec![1u8; 100].into()).await.expect("put");
        let ranged = GetOptions { range: Some(GetRange::Bounded(10..30)), ..Default::default() };
        let got = store.get_opts(&key, ranged).await.expect("get").bytes().await.expect("body");
        assert_eq!(got.len(), 20);
        let (s, key2) = (Arc::clone(&store), key.clone());
        with_fetch_reason(FetchReason::ReadAhead, async move {
            s.get(&key2).await.expect("get").bytes().await.expect("body");
        })
        .await;
        let c = counters.snapshot();
        assert_eq!((c.gets, c.ranged_gets, c.bytes_received, c.fetch_bytes_received), (2, 1, 120, 20));
    }

    /// Every request is timed into its method's histogram, a GET once its
    /// body is read, a failed one too.
    #[tokio::test]
    async fn each_request_is_timed_by_method() {
        use object_store::ObjectStoreExt;
        let counters = Arc::new(RequestCounters::default());
        let store = CountingStore::new(object_store::memory::InMemory::new(), counters.clone());
        let key = Path::from("v/00000000");
        store.put(&key, vec![1u8; 8].into()).await.expect("put");
        let got = store.get(&key).await.expect("get");
        assert_eq!(counters.snapshot().latency.get.count(), 0, "the body is not read yet");
        got.bytes().await.expect("body");
        let _ = store.get(&Path::from("v/00000001")).await.expect_err("absent");
        let _: Vec<_> = store.list(None).collect().await;
        let l = counters.snapshot().latency;
        assert_eq!((l.get.count(), l.put.count(), l.list.count(), l.delete.count()), (2, 1, 1, 0));
    }
}
