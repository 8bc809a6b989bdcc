//! Store-level behaviour: credentials, the local sidecar, the advisory lock.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use s3block_core::{BlockDevice, BlockId, Error, Geometry, KeyLayout};
use s3block_store::conformance as c;
use s3block_store::{
    CodecChain, CredentialSource, Deflate, LockMode, LockOptions, MountLock, ObjectBlockDevice,
    SIDECAR_SUFFIX, StoreConfig, parse_access_file, probe_conditional_put,
};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn access_file_lines() {
    let text = "# comment\n\nAKIA1:secret1\nAKIA2: secret2 \n";
    assert_eq!(parse_access_file(text, None), Some(("AKIA1".into(), "secret1".into())));
    assert_eq!(parse_access_file(text, Some("AKIA2")), Some(("AKIA2".into(), "secret2".into())));
    assert_eq!(parse_access_file(text, Some("AKIA3")), None);
    assert_eq!(parse_access_file("no colon here\n", None), None);
    // A line with an empty key id or secret is no credential.
    assert_eq!(parse_access_file(":\n :s\nid: \nAKIA4:s4\n", None), Some(("AKIA4".into(), "s4".into())));
    assert_eq!(parse_access_file(":secret\n", None), None);
}

#[test]
fn credential_precedence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("passwd");
    std::fs::write(&file, "FILE1:fs1\nFILE2:fs2\n").expect("write");
    let home = dir.path().to_str().expect("utf-8 path");
    std::fs::write(dir.path().join(".s3backer_passwd"), "HOME1:hs1\n").expect("write");

    let full = env(&[
        ("AWS_ACCESS_KEY_ID", "ENV"),
        ("AWS_SECRET_ACCESS_KEY", "envs"),
        ("AWS_SESSION_TOKEN", "tok"),
        ("HOME", home),
    ]);
    let cfg = StoreConfig::new("s3://b").access_key_id("OPT").secret_access_key("opts").access_file(&file);
    let c = cfg.clone().env(full).resolve_credentials().expect("ok").expect("some");
    assert_eq!(
        (c.access_key_id.as_str(), c.session_token.as_deref(), &c.source),
        ("ENV", Some("tok"), &CredentialSource::Environment)
    );

    let c = cfg.clone().env(env(&[("HOME", home)])).resolve_credentials().expect("ok").expect("some");
    assert_eq!((c.access_key_id.as_str(), &c.source), ("OPT", &CredentialSource::Options));

    // An id without its secret picks that line of the access file.
    let c = StoreConfig::new("s3://b").access_key_id("FILE2").access_file(&file).env(HashMap::new());
    let c = c.resolve_credentials().expect("ok").expect("some");
    assert_eq!((c.access_key_id.as_str(), c.secret_access_key.as_str()), ("FILE2", "fs2"));
    assert_eq!(c.source, CredentialSource::AccessFile(file.clone()));

    let c = StoreConfig::new("s3://b")
        .env(env(&[("HOME", home)]))
        .resolve_credentials()
        .expect("ok")
        .expect("some");
    assert_eq!(c.access_key_id, "HOME1");

    let err = StoreConfig::new("s3://b")
        .access_key_id("NOPE")
        .access_file(&file)
        .env(HashMap::new())
        .resolve_credentials();
    assert!(err.expect_err("unknown id").to_string().contains("NOPE"));
    let none = StoreConfig::new("s3://b")
        .env(env(&[("HOME", "/nonexistent-home")]))
        .resolve_credentials()
        .expect("ok");
    assert!(none.is_none());
    let missing = StoreConfig::new("s3://b")
        .access_file(dir.path().join("missing"))
        .env(HashMap::new())
        .resolve_credentials();
    assert!(matches!(missing, Err(Error::Io { .. })));
}

#[test]
fn urls_and_regions() {
    let cfg = StoreConfig::new("s3://bucket/some/vol")
        .endpoint("http://127.0.0.1:3900")
        .env(env(&[("AWS_REGION", "garage")]));
    assert_eq!(cfg.resolved_region(), "garage");
    let opened = cfg.open().expect("s3 store");
    assert_eq!(opened.prefix, "some/vol/");
    assert!(
        StoreConfig::new("ftp://x")
            .env(HashMap::new())
            .open()
            .expect_err("scheme")
            .to_string()
            .contains("ftp")
    );
    let o = StoreConfig::new("memory:///p").prefix("literal-").env(HashMap::new()).open().expect("memory");
    assert_eq!(o.prefix, "literal-");
    assert_eq!(
        StoreConfig::new("s3://b").region("eu-west-1").env(env(&[("AWS_REGION", "x")])).resolved_region(),
        "eu-west-1"
    );
}

#[tokio::test]
async fn local_sidecar_keeps_attributes_and_survives_a_torn_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opened = StoreConfig::new(format!("file://{}", dir.path().display()))
        .env(HashMap::new())
        .open()
        .expect("open");
    let g = Geometry::new(64 * 4096, 4096).expect("geometry");
    let dev = ObjectBlockDevice::new(opened.store.clone(), KeyLayout::new("v/", false), g)
        .with_codecs(CodecChain::new().with(Arc::new(Deflate::new(9).expect("level"))));
    let mut block = vec![0u8; 4096];
    block[..10].fill(1);
    dev.write_block(BlockId(2), block.clone().into()).await.expect("write");
    let obj = dir.path().join("v/00000002");
    let side = dir.path().join(format!("v/00000002{SIDECAR_SUFFIX}"));
    assert!(obj.exists() && side.exists());
    let sidecar = std::fs::read_to_string(&side).expect("sidecar");
    assert!(sidecar.contains("deflate"), "{sidecar}");
    // Listing hides the sidecar.
    let listed: Vec<ObjectMeta> =
        futures::TryStreamExt::try_collect(opened.store.list(None)).await.expect("list");
    assert!(listed.iter().all(|m| !m.location.as_ref().ends_with(SIDECAR_SUFFIX)), "{listed:?}");
    assert_eq!(listed.len(), 1);

    // A crash after the sidecar and before the object: the old object must
    // still read with its own (old) attributes.
    let old_obj = std::fs::read(&obj).expect("object");
    block[..10].fill(2);
    dev.write_block(BlockId(2), block.clone().into()).await.expect("write 2");
    std::fs::write(&obj, &old_obj).expect("restore old object");
    let back = dev.read_block(BlockId(2)).await.expect("old version reads");
    assert_eq!(back[0], 1);
    // An object that matches no sidecar entry is corrupt, not misdecoded.
    std::fs::write(&obj, vec![5u8; 4096]).expect("foreign object");
    let err = dev.read_block(BlockId(2)).await.expect_err("stale sidecar");
    assert!(matches!(&err, Error::Corrupt { block: BlockId(2), key, .. } if key == "v/00000002"), "{err}");
    // Zeroing deletes object and sidecar.
    dev.write_block(BlockId(2), vec![0u8; 4096].into()).await.expect("zero");
    assert!(!obj.exists() && !side.exists());
}

/// A store that accepts `PutMode::Create` and ignores it, as Garage 2.5 does.
#[derive(Debug)]
struct IgnoreCreate<T>(T);

impl<T: fmt::Display> fmt::Display for IgnoreCreate<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IgnoreCreate({})", self.0)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<T: ObjectStore> ObjectStore for IgnoreCreate<T> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> Result<PutResult> {
        if opts.mode == PutMode::Create {
            opts.mode = PutMode::Overwrite;
        }
        self.0.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.0.get_opts(location, options).await
    }
    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.0.get_ranges(location, ranges).await
    }
    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.0.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.0.list(prefix)
    }
    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.0.list_with_offset(prefix, offset)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.0.copy_opts(from, to, options).await
    }
    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.0.rename_opts(from, to, options).await
    }
}

#[tokio::test]
async fn advisory_lock_where_conditional_create_is_ignored() {
    let real = StoreConfig::new("memory://").env(HashMap::new()).open().expect("memory").store;
    assert!(probe_conditional_put(real.as_ref(), "x/").await.expect("probe"));
    let store: Arc<dyn ObjectStore> = Arc::new(IgnoreCreate(real.clone()));
    assert!(!probe_conditional_put(store.as_ref(), "x/").await.expect("probe"));
    // The probe leaves nothing behind.
    let left: Vec<ObjectMeta> = futures::TryStreamExt::try_collect(real.list(None)).await.expect("list");
    assert!(left.is_empty(), "{left:?}");
    let lock = MountLock::acquire(store.clone(), "x/", LockOptions::default()).await.expect("lock");
    assert_eq!(lock.mode(), LockMode::Advisory);
    lock.release().await.expect("release");
    c::mount_lock(store, "adv/", None).await;
}

/// Blocks stored without a descriptor or block 0 are never taken for an
/// empty prefix: creating a volume over them is refused, adopting them
/// with their geometry makes them readable again.
#[tokio::test]
async fn create_refuses_stored_blocks_and_adopt_takes_them() {
    use s3block_core::{BlockDevice, BlockId, Bytes, Geometry, KeyLayout};
    use s3block_store::{
        ObjectBlockDevice, VolumeOptions, adopt_volume_with, create_volume_with, open_volume,
    };
    let store: std::sync::Arc<dyn object_store::ObjectStore> =
        std::sync::Arc::new(object_store::memory::InMemory::new());
    let geometry = Geometry::new(1 << 20, 64 << 10).unwrap();
    let dev = ObjectBlockDevice::new(store.clone(), KeyLayout::new("v/", false), geometry);
    let data = Bytes::from(vec![9u8; 64 << 10]);
    dev.write_block(BlockId(3), data.clone()).await.unwrap();
    let opts = VolumeOptions { size: Some(1 << 20), block_size: Some(64 << 10), ..Default::default() };
    let err = create_volume_with(store.as_ref(), "v/", &opts, None).await.unwrap_err();
    assert!(matches!(err, s3block_core::Error::StoredBlocksWithoutVolume { .. }), "{err}");
    assert!(err.to_string().contains("v/00000003"), "{err}");
    adopt_volume_with(store.as_ref(), "v/", &opts, None).await.unwrap();
    let vol = open_volume(store.as_ref(), "v/", &VolumeOptions::default()).await.unwrap();
    assert_eq!(vol.geometry, geometry);
    assert_eq!(dev.read_block(BlockId(3)).await.unwrap(), data);
    // A prefix with no blocks is still free to create.
    create_volume_with(store.as_ref(), "w/", &opts, None).await.unwrap();
}
