//! Object attributes for stores that cannot keep them: the local directory.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions, Result,
};
use serde::{Deserialize, Serialize};

/// Suffix of the sidecar object that holds an object's attributes.
pub const SIDECAR_SUFFIX: &str = ".s3block-attrs";

/// The largest sidecar read.
const MAX_SIDECAR_BYTES: u64 = 64 << 10;

/// A body that matches none of the attribute entries recorded for it.
#[derive(Debug, thiserror::Error)]
#[error(
    "object {key}: its attributes sidecar describes another version of the object ({len} bytes{})",
    crc.map(|c| format!(", crc32 {c:08x}")).unwrap_or_default()
)]
pub struct StaleAttributes {
    /// The object key.
    pub key: String,
    len: u64,
    /// The body's CRC-32, when the body was read.
    crc: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Entry {
    size: u64,
    crc32: u32,
    attributes: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Sidecar {
    versions: Vec<Entry>,
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum()
}

fn sidecar_path(location: &Path) -> Path {
    // The location is a valid path; a suffix without '/' keeps it one.
    Path::parse(format!("{location}{SIDECAR_SUFFIX}")).expect("a valid path with a plain suffix is valid")
}

fn is_sidecar(location: &Path) -> bool {
    location.as_ref().ends_with(SIDECAR_SUFFIX)
}

fn encode_attributes(attrs: &Attributes) -> BTreeMap<String, String> {
    attrs
        .iter()
        .filter_map(|(k, v)| {
            let name = match k {
                Attribute::ContentDisposition => "Content-Disposition".to_owned(),
                Attribute::ContentEncoding => "Content-Encoding".to_owned(),
                Attribute::ContentLanguage => "Content-Language".to_owned(),
                Attribute::ContentType => "Content-Type".to_owned(),
                Attribute::CacheControl => "Cache-Control".to_owned(),
                Attribute::StorageClass => "Storage-Class".to_owned(),
                Attribute::Metadata(m) => format!("meta:{m}"),
                _ => return None,
            };
            Some((name, v.as_ref().to_owned()))
        })
        .collect()
}

fn decode_attributes(map: &BTreeMap<String, String>) -> Attributes {
    let mut attrs = Attributes::new();
    for (k, v) in map {
        let key = match k.as_str() {
            "Content-Disposition" => Attribute::ContentDisposition,
            "Content-Encoding" => Attribute::ContentEncoding,
            "Content-Language" => Attribute::ContentLanguage,
            "Content-Type" => Attribute::ContentType,
            "Cache-Control" => Attribute::CacheControl,
            "Storage-Class" => Attribute::StorageClass,
            other => match other.strip_prefix("meta:") {
                Some(m) => Attribute::Metadata(m.to_owned().into()),
                None => continue,
            },
        };
        attrs.insert(key, AttributeValue::from(v.clone()));
    }
    attrs
}

fn payload_crc(payload: &PutPayload) -> u32 {
    let mut c = flate2::Crc::new();
    for chunk in payload.iter() {
        c.update(chunk);
    }
    c.sum()
}

/// Object attributes for stores that cannot keep them: the local directory.
///
/// `object_store`'s `LocalFileSystem` refuses a PUT that carries attributes,
/// but s3block needs `Content-Encoding` (how to decode a block), the content
/// type, block 0's geometry metadata and the mount lock's token.
/// [`SidecarStore`] keeps them in a small JSON object next to each object,
/// `<key>.s3block-attrs`, and hides those sidecars from listings.
///
/// # Why a sidecar, and how it stays crash-safe
///
/// Extended attributes would bind the attributes to the file, but they are
/// not available on every filesystem (tmpfs without `user_xattr`, some
/// container overlays) and are lost by plain `cp`. A sidecar is an ordinary
/// file on any filesystem.
///
/// An object and its sidecar are two files, so a crash can leave one new and
/// the other old. Each sidecar entry therefore records the length and CRC-32
/// of the object body it describes, and the sidecar keeps the previous entry
/// too. A PUT writes the sidecar (new entry first, previous one kept) and
/// then the object; a read uses the entry whose length and CRC match the body
/// it got. So after a crash between the two writes, the old object still
/// finds its old attributes, and a body that matches no entry is reported as
/// [`StaleAttributes`] (s3block turns that into a corrupt-block error) rather
/// than decoded with the wrong encoding. An object with no sidecar at all has
/// no attributes.
#[derive(Debug)]
pub struct SidecarStore<T> {
    inner: T,
}

impl<T: ObjectStore> SidecarStore<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        SidecarStore { inner }
    }

    /// The raw bytes of the sidecar, `None` when there is none.
    /// A conditional create: the object first, then its sidecar, so that a
    /// create that loses to another one never touches the winner's sidecar
    /// (two processes racing to create one object on a local directory).
    /// Between the two writes the object reads with no attributes.
    async fn create(&self, location: &Path, payload: PutPayload, mut opts: PutOptions) -> Result<PutResult> {
        let attributes = std::mem::take(&mut opts.attributes);
        let entry = Entry {
            size: payload.content_length() as u64,
            crc32: payload_crc(&payload),
            attributes: encode_attributes(&attributes),
        };
        let raw = serde_json::to_vec(&Sidecar { versions: vec![entry] })
            .map_err(|e| object_store::Error::Generic { store: "SidecarStore", source: Box::new(e) })?;
        let put = self.inner.put_opts(location, payload, opts).await?;
        if let Err(e) = self.write_raw(&sidecar_path(location), raw.into()).await {
            // Without its attributes the object would be read wrongly: take it back.
            let _ = self.delete_quiet(location).await;
            return Err(e);
        }
        Ok(put)
    }

    /// The raw bytes of the sidecar at `path`, `None` when there is none.
    async fn read_raw(&self, path: &Path) -> Result<Option<Bytes>> {
        match self.inner.get_opts(path, GetOptions::default()).await {
            // A sidecar holds two entries of a few attributes: a larger file
            // is not one, and is not read.
            Ok(r) if r.meta.size > MAX_SIDECAR_BYTES => Err(object_store::Error::Generic {
                store: "SidecarStore",
                source: format!(
                    "attributes sidecar {path} is not valid: {} bytes, a sidecar is under {MAX_SIDECAR_BYTES}",
                    r.meta.size
                )
                .into(),
            }),
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn read_sidecar(&self, location: &Path) -> Result<Option<Sidecar>> {
        let path = sidecar_path(location);
        let raw = self.read_raw(&path).await?;
        match raw {
            None => Ok(None),
            Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(|e| {
                // serde's message for a bad value quotes it, and the retry
                // layer reads error texts for status codes and S3 error
                // codes: a sidecar holding "<Code>SlowDown<" was retried as
                // a busy server. Say where the value is instead.
                let what = match e.classify() {
                    serde_json::error::Category::Data => {
                        format!("a value of the wrong type at line {} column {}", e.line(), e.column())
                    }
                    _ => e.to_string(),
                };
                object_store::Error::Generic {
                    store: "SidecarStore",
                    source: format!("attributes sidecar {path} is not valid: {what}").into(),
                }
            }),
        }
    }

    async fn write_raw(&self, path: &Path, raw: Bytes) -> Result<()> {
        self.inner.put_opts(path, raw.into(), PutOptions::default()).await.map(|_| ())
    }

    async fn delete_quiet(&self, path: &Path) -> Result<()> {
        let mut s = self.inner.delete_stream(futures::stream::iter([Ok(path.clone())]).boxed());
        while let Some(r) = s.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<T: fmt::Display> fmt::Display for SidecarStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SidecarStore({})", self.inner)
    }
}

fn not_sidecar(r: &Result<ObjectMeta>) -> futures::future::Ready<bool> {
    futures::future::ready(!matches!(r, Ok(m) if is_sidecar(&m.location)))
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<T: ObjectStore> ObjectStore for SidecarStore<T> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> Result<PutResult> {
        if matches!(opts.mode, PutMode::Create) {
            return self.create(location, payload, opts).await;
        }
        let attributes = std::mem::take(&mut opts.attributes);
        let side = sidecar_path(location);
        let old_raw = self.read_raw(&side).await?;
        let old: Sidecar = old_raw.as_ref().and_then(|r| serde_json::from_slice(r).ok()).unwrap_or_default();
        let entry = Entry {
            size: payload.content_length() as u64,
            crc32: payload_crc(&payload),
            attributes: encode_attributes(&attributes),
        };
        let mut versions = vec![entry.clone()];
        versions.extend(
            old.versions.into_iter().filter(|e| (e.size, e.crc32) != (entry.size, entry.crc32)).take(1),
        );
        let raw = serde_json::to_vec(&Sidecar { versions })
            .map_err(|e| object_store::Error::Generic { store: "SidecarStore", source: Box::new(e) })?;
        self.write_raw(&side, raw.into()).await?;
        match self.inner.put_opts(location, payload, opts).await {
            Ok(r) => Ok(r),
            Err(e) => {
                // The object was not replaced: put its sidecar back as it was.
                let _ = match old_raw {
                    Some(raw) => self.write_raw(&side, raw).await,
                    None => self.delete_quiet(&side).await,
                };
                Err(e)
            }
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        if !opts.attributes.is_empty() {
            return Err(object_store::Error::NotImplemented {
                operation: "multipart upload with attributes".into(),
                implementer: self.to_string(),
            });
        }
        self.delete_quiet(&sidecar_path(location)).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, mut options: GetOptions) -> Result<GetResult> {
        let head = std::mem::take(&mut options.head);
        let range = options.range.take();
        let plain = options.clone();
        let res = self.inner.get_opts(location, options).await?;
        let meta = res.meta.clone();
        let extensions = res.extensions.clone();
        let side = self.read_sidecar(location).await?;
        // The body is read only when needed, so that a caller can look at
        // its size first: without a sidecar, a whole object is passed on as
        // it comes, and a HEAD needs none of it; a body whose size no entry
        // records matches none.
        if side.is_none() && range.is_none() {
            if !head {
                return Ok(res);
            }
            return Ok(GetResult {
                payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
                range: 0..meta.size,
                meta,
                attributes: Attributes::new(),
                extensions,
            });
        }
        // Without a sidecar there are no attributes to match the body to:
        // a range is read as a range.
        if side.is_none()
            && !head
            && let Some(r) = range
        {
            drop(res);
            return self.inner.get_opts(location, GetOptions { range: Some(r), ..plain }).await;
        }
        if let Some(side) = &side
            && !side.versions.iter().any(|e| e.size == meta.size)
        {
            return Err(object_store::Error::Generic {
                store: "SidecarStore",
                source: Box::new(StaleAttributes { key: location.to_string(), len: meta.size, crc: None }),
            });
        }
        let body = res.bytes().await?;
        let attributes = match side {
            None => Attributes::new(),
            Some(side) => {
                let (len, crc) = (body.len() as u64, crc32(&body));
                match side.versions.iter().find(|e| e.size == len && e.crc32 == crc) {
                    Some(e) => decode_attributes(&e.attributes),
                    None => {
                        return Err(object_store::Error::Generic {
                            store: "SidecarStore",
                            source: Box::new(StaleAttributes {
                                key: location.to_string(),
                                len,
                                crc: Some(crc),
                            }),
                        });
                    }
                }
            }
        };
        let len = body.len() as u64;
        let r = match range {
            Some(r) => r
                .as_range(len)
                .map_err(|e| object_store::Error::Generic { store: "SidecarStore", source: Box::new(e) })?,
            None => 0..len,
        };
        let data = if head { Bytes::new() } else { body.slice(r.start as usize..r.end as usize) };
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(data) }).boxed()),
            meta,
            range: r,
            attributes,
            extensions,
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        // Each object is deleted before its sidecar: a sidecar left alone is harmless.
        let expanded = locations
            .flat_map(|r| {
                let items = match r {
                    Ok(p) => vec![Ok(p.clone()), Ok(sidecar_path(&p))],
                    Err(e) => vec![Err(e)],
                };
                futures::stream::iter(items)
            })
            .boxed();
        self.inner
            .delete_stream(expanded)
            .try_filter(|p| futures::future::ready(!is_sidecar(p)))
            .filter(|r| {
                let keep = !matches!(r, Err(object_store::Error::NotFound { path, .. }) if path.ends_with(SIDECAR_SUFFIX));
                futures::future::ready(keep)
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix).filter(not_sidecar).boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset).filter(not_sidecar).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut res = self.inner.list_with_delimiter(prefix).await?;
        res.objects.retain(|m| !is_sidecar(&m.location));
        Ok(res)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        match self.read_raw(&sidecar_path(from)).await? {
            Some(raw) => self.write_raw(&sidecar_path(to), raw).await?,
            None => self.delete_quiet(&sidecar_path(to)).await?,
        }
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        let side = self.read_raw(&sidecar_path(from)).await?;
        match &side {
            Some(raw) => self.write_raw(&sidecar_path(to), raw.clone()).await?,
            None => self.delete_quiet(&sidecar_path(to)).await?,
        }
        self.inner.rename_opts(from, to, options).await?;
        self.delete_quiet(&sidecar_path(from)).await
    }
}
