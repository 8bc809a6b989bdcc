//! S3 request options: server-side encryption, storage class and canned
//! ACL of the objects written.
//!
//! Server-side encryption is `object_store`'s own setting: it sends the
//! `x-amz-server-side-encryption` headers on PUTs and copies only. The
//! storage class and the ACL belong on PUTs only as well, but
//! `object_store` has no per-request ACL, so both are default headers of a
//! second S3 client that only writes (signed like every header), and
//! [`SplitWriteStore`] sends puts and copies to it, everything else to the
//! first. Reads, listings and deletes carry neither header.

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::ClientOptions;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, HeaderMap, HeaderValue, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// Server-side encryption of the objects written (`x-amz-server-side-encryption`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSideEncryption {
    /// `AES256`: keys managed by S3 (SSE-S3).
    Aes256,
    /// `aws:kms`: a KMS key, the bucket's default one when `key_id` is `None`.
    Kms {
        /// The KMS key (`x-amz-server-side-encryption-aws-kms-key-id`).
        key_id: Option<String>,
    },
}

impl ServerSideEncryption {
    /// Reads `AES256` or `aws:kms` (the header's values); `key_id` goes
    /// with `aws:kms` only. Errors say what is accepted.
    pub fn parse(kind: &str, key_id: Option<&str>) -> std::result::Result<Self, String> {
        match (kind, key_id) {
            ("AES256", None) => Ok(ServerSideEncryption::Aes256),
            ("AES256", Some(_)) => Err("a KMS key id goes with aws:kms, not AES256".into()),
            ("aws:kms", key) => Ok(ServerSideEncryption::Kms { key_id: key.map(str::to_owned) }),
            (other, _) => Err(format!("{other:?} is not AES256 or aws:kms")),
        }
    }

    fn apply(&self, builder: AmazonS3Builder) -> AmazonS3Builder {
        match self {
            ServerSideEncryption::Aes256 => builder.with_config(sse_key(), "AES256"),
            ServerSideEncryption::Kms { key_id: Some(id) } => builder.with_sse_kms_encryption(id),
            ServerSideEncryption::Kms { key_id: None } => builder.with_config(sse_key(), "aws:kms"),
        }
    }
}

/// `object_store`'s configuration key of the encryption type.
fn sse_key() -> AmazonS3ConfigKey {
    "aws_server_side_encryption".parse().expect("object_store names this key")
}

/// The storage classes a block may be written in: those whose objects are
/// read at once. GLACIER and DEEP_ARCHIVE are refused: a block there reads
/// only after a restore, so the device would fail its reads.
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "REDUCED_REDUNDANCY",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "OUTPOSTS",
    "EXPRESS_ONEZONE",
];

/// Checks a storage class name (`x-amz-storage-class`).
pub fn parse_storage_class(text: &str) -> std::result::Result<String, String> {
    if STORAGE_CLASSES.contains(&text) {
        return Ok(text.to_owned());
    }
    if matches!(text, "GLACIER" | "DEEP_ARCHIVE") {
        return Err(format!(
            "{text}: a block in {text} can be read only after a restore, so the volume could not be read; \
             use one of {}",
            STORAGE_CLASSES.join(", ")
        ));
    }
    Err(format!("{text:?} is not a storage class: use one of {}", STORAGE_CLASSES.join(", ")))
}

/// The canned ACLs of S3 (`x-amz-acl`).
pub const CANNED_ACLS: &[&str] = &[
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
];

/// Checks a canned ACL name.
pub fn parse_canned_acl(text: &str) -> std::result::Result<String, String> {
    if CANNED_ACLS.contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a canned ACL: use one of {}", CANNED_ACLS.join(", ")))
    }
}

/// The S3 request options of a store (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct S3Options {
    /// Server-side encryption of the objects written.
    pub sse: Option<ServerSideEncryption>,
    /// Storage class of the objects written (one of [`STORAGE_CLASSES`]).
    pub storage_class: Option<String>,
    /// Canned ACL of the objects written (one of [`CANNED_ACLS`]).
    pub acl: Option<String>,
    /// Time limit of one attempt of a request, connection and body
    /// included (`object_store`'s default, 30 s, when `None`). An attempt
    /// that runs out is a transient failure: [`RetryStore`](crate::RetryStore) retries it.
    pub timeout: Option<std::time::Duration>,
    /// PEM file of certificates to trust besides the system's.
    pub ca_certificates: Option<std::path::PathBuf>,
    /// Accept any certificate of an HTTPS endpoint (no verification at all).
    pub insecure: bool,
}

impl S3Options {
    /// The headers only writes carry.
    pub(crate) fn write_headers(&self) -> std::result::Result<HeaderMap, String> {
        let mut headers = HeaderMap::new();
        let mut add = |name: &'static str, value: &str| {
            let value = HeaderValue::from_str(value).map_err(|e| format!("{name}: {value:?}: {e}"))?;
            headers.insert(name, value);
            Ok::<(), String>(())
        };
        if let Some(class) = &self.storage_class {
            add("x-amz-storage-class", class)?;
        }
        if let Some(acl) = &self.acl {
            add("x-amz-acl", acl)?;
        }
        Ok(headers)
    }

    /// `builder` with the server-side encryption set.
    pub(crate) fn apply_sse(&self, builder: AmazonS3Builder) -> AmazonS3Builder {
        match &self.sse {
            Some(sse) => sse.apply(builder),
            None => builder,
        }
    }

    /// The HTTP options of the client that reads (`base`) and, when writes
    /// carry headers of their own, those of a second client that writes.
    pub(crate) fn client_options(
        &self,
        base: ClientOptions,
    ) -> std::result::Result<(ClientOptions, Option<ClientOptions>), String> {
        let mut base = match self.timeout {
            Some(t) => base.with_timeout(t),
            None => base,
        };
        if let Some(path) = &self.ca_certificates {
            let pem =
                std::fs::read(path).map_err(|e| format!("CA certificate file {}: {e}", path.display()))?;
            let certificates = object_store::client::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("CA certificate file {}: {e}", path.display()))?;
            if certificates.is_empty() {
                return Err(format!("CA certificate file {}: no PEM certificate in it", path.display()));
            }
            for certificate in certificates {
                base = base.with_root_certificate(certificate);
            }
        }
        if self.insecure {
            base = base.with_allow_invalid_certificates(true);
        }
        let headers = self.write_headers()?;
        let writer = (!headers.is_empty()).then(|| base.clone().with_default_headers(headers));
        Ok((base, writer))
    }
}

/// Sends puts and copies to `writer`, every other request to `reader`: two
/// clients of the same bucket whose writes carry headers the reads must not.
#[derive(Debug)]
pub struct SplitWriteStore<R, W> {
    reader: R,
    writer: W,
}

impl<R, W> SplitWriteStore<R, W> {
    /// Reads through `reader`, writes through `writer`.
    pub fn new(reader: R, writer: W) -> Self {
        SplitWriteStore { reader, writer }
    }
}

impl<R: fmt::Display, W> fmt::Display for SplitWriteStore<R, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SplitWriteStore({})", self.reader)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<R: ObjectStore, W: ObjectStore> ObjectStore for SplitWriteStore<R, W> {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.writer.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.writer.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.reader.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.reader.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.reader.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.reader.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.reader.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.reader.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.writer.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.writer.rename_opts(from, to, options).await
    }
}
