//! An `ObjectStore` wrapper that counts requests and bytes into the shared
//! [`RequestCounters`]: what the user is billed for.
//!
//! It sits below the retry layer, so each attempt counts as the request it
//! is. A HEAD counts as a GET; a copy as a PUT. A bulk delete counts one
//! request per 1000 keys (what S3's multi-object delete takes) and every key
//! as a delete. A listing counts one request per 1000 objects returned, the
//! S3 page size.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use s3block_core::RequestCounters;

/// Keys per S3 multi-object delete request and objects per LIST page.
pub(crate) const PAGE: u64 = 1000;

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
        counters.add_lists(1);
        let mut n = 0u64;
        s.inspect(move |_| {
            n += 1;
            if n % PAGE == 0 {
                counters.add_lists(1);
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
        self.counters.add_puts(1);
        self.counters.add_bytes_sent(payload.content_length() as u64);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.counters.add_puts(1);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.counters.add_gets(1);
        let mut res = self.inner.get_opts(location, options).await?;
        let counters = self.counters.clone();
        res.payload = match res.payload {
            GetResultPayload::Stream(s) => GetResultPayload::Stream(
                s.inspect(move |chunk| {
                    if let Ok(b) = chunk {
                        counters.add_bytes_received(b.len() as u64);
                    }
                })
                .boxed(),
            ),
            GetResultPayload::File(file, path) => {
                counters.add_bytes_received(res.range.end.saturating_sub(res.range.start));
                GetResultPayload::File(file, path)
            }
        };
        Ok(res)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.counters.add_gets(ranges.len() as u64);
        let out = self.inner.get_ranges(location, ranges).await?;
        self.counters.add_bytes_received(out.iter().map(|b| b.len() as u64).sum());
        Ok(out)
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let counters = self.counters.clone();
        let mut n = 0u64;
        let counted = locations
            .inspect(move |p| {
                if p.is_ok() {
                    if n % PAGE == 0 {
                        counters.add_bulk_deletes(1);
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
        self.counters.add_lists(1);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.counters.add_puts(1);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.counters.add_puts(1);
        self.counters.add_deletes(1);
        self.inner.rename_opts(from, to, options).await
    }
}
