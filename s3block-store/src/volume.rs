//! The volume descriptor, and creating and opening a volume.
//!
//! s3block records each volume's settings in `{prefix}s3block-volume.json`
//! (s3backer ignores it). Opening a volume takes its geometry from, in
//! order: the descriptor; block 0's `s3backer-blocksize`/`s3backer-filesize`
//! metadata (volumes made by s3backer); the options given. Options that
//! contradict what is stored are refused, naming both values.
//!
//! When the descriptor and block 0 record different sizes (an
//! `s3block resize` stopped between its two writes), the descriptor wins:
//! it is written last, so it holds the size the resize committed to, and
//! block 0 is rewritten by the next resize or by the next write of block 0
//! (see the `resize` module).

use std::sync::Arc;
use std::time::SystemTime;

use object_store::{Attribute, GetOptions, ObjectStore, PutMode, PutOptions};
use rand::Rng;
use s3block_core::{BlockId, DEFAULT_BLOCK_SIZE, Error, Geometry, KeyLayout, Result, format_size};
use serde::{Deserialize, Serialize};

use crate::codec::{CodecChain, Compression, CompressionAlgorithm};
use crate::device::{META_BLOCK_SIZE, META_FILE_SIZE, max_object_size, object_metadata};
use crate::encryption::{
    EncryptionOptions, EncryptionParams, EncryptionScheme, new_encryption, unlock, volume_codecs,
};
use crate::error::{is_absent, store_error};
use crate::keys::key_path;
use crate::lock::utc_stamp;
use crate::s3backer_crypto::{META_HMAC, S3backerCodec};

/// Name of the descriptor object under the volume's prefix.
pub const DESCRIPTOR_NAME: &str = "s3block-volume.json";
/// The largest descriptor read (one is under 1 KiB): a larger object at its
/// key is refused without being read.
const MAX_DESCRIPTOR_BYTES: u64 = 64 << 10;
/// The newest descriptor format this version writes and reads: 2, that of
/// volumes whose blocks are encrypted in authenticated 64 KiB chunks
/// ([`ChunkedXChaChaCodec`](crate::ChunkedXChaChaCodec)). Other volumes are
/// written with [`FORMAT_VERSION_PLAIN`], which older versions read too.
pub const FORMAT_VERSION: u32 = 2;
/// The descriptor format of volumes without chunked encryption (and of
/// every volume made before it).
pub const FORMAT_VERSION_PLAIN: u32 = 1;

/// The contents of `s3block-volume.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VolumeDescriptor {
    /// Descriptor format version.
    pub format: u32,
    /// Block size in bytes.
    pub block_size: u64,
    /// Volume size in bytes.
    pub size: u64,
    /// Compression level blocks are written with, `None` for none; the
    /// algorithm is [`compression_algorithm`](Self::compression_algorithm).
    pub compression: Option<u32>,
    /// The algorithm of [`compression`](Self::compression): absent from
    /// descriptors written before zstd, which are deflate, and left out
    /// when deflate, so those read the same as before.
    #[serde(default, skip_serializing_if = "CompressionAlgorithm::is_deflate")]
    pub compression_algorithm: CompressionAlgorithm,
    /// Encryption parameters ([`EncryptionParams`] as JSON), `None` when
    /// blocks are not encrypted. Kept as JSON so that a descriptor whose
    /// scheme this version does not know still shows its geometry; read it
    /// with [`encryption_params`](Self::encryption_params).
    encryption: Option<serde_json::Value>,
    /// Whether keys carry the hash prefix.
    pub hash_prefix: bool,
    /// Random 128-bit id, hex.
    pub volume_id: String,
    /// Creation time, `YYYYMMDDTHHMMSSZ` UTC.
    pub created_at: String,
}

impl VolumeDescriptor {
    /// The volume's geometry.
    pub fn geometry(&self) -> Result<Geometry> {
        Geometry::new(self.size, self.block_size)
    }

    /// How new blocks are compressed, `None` when they are not.
    pub fn compressed_with(&self) -> Result<Option<Compression>> {
        self.compression
            .map(|level| Compression::new(self.compression_algorithm, Some(level)))
            .transpose()
            .map_err(|e| Error::BadMetadata { key: DESCRIPTOR_NAME.to_owned(), reason: e.to_string() })
    }

    /// Whether the volume's blocks are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    /// The encryption parameters, `None` when the volume is not encrypted.
    pub fn encryption_params(&self) -> Result<Option<EncryptionParams>> {
        self.encryption
            .as_ref()
            .map(|v| {
                let bad = |reason| Error::BadMetadata { key: DESCRIPTOR_NAME.to_owned(), reason };
                let params: EncryptionParams = serde_json::from_value(v.clone())
                    .map_err(|e| bad(format!("encryption parameters are not understood: {e}")))?;
                params.check().map_err(bad)?;
                Ok(params)
            })
            .transpose()
    }
}

/// What the user asked for; `None` means "whatever the volume has".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeOptions {
    /// Volume size in bytes.
    pub size: Option<u64>,
    /// Block size in bytes.
    pub block_size: Option<u64>,
    /// Hash-prefixed keys.
    pub hash_prefix: Option<bool>,
    /// Compression level for new blocks (recorded in the descriptor on create).
    pub compression: Option<u32>,
    /// The algorithm of [`compression`](Self::compression) (deflate unless set).
    pub compression_algorithm: CompressionAlgorithm,
}

impl VolumeOptions {
    /// How new blocks are to be compressed, checked; `None` for not at all.
    pub fn compressed_with(&self) -> Result<Option<Compression>> {
        self.compression.map(|level| Compression::new(self.compression_algorithm, Some(level))).transpose()
    }

    /// Asks for `compression` (or none) for new blocks.
    pub fn with_compression(mut self, compression: Option<Compression>) -> Self {
        self.compression = compression.map(|c| c.level());
        self.compression_algorithm = compression.map(|c| c.algorithm()).unwrap_or_default();
        self
    }
}

/// Where an opened volume's geometry came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GeometrySource {
    /// The s3block descriptor.
    Descriptor(VolumeDescriptor),
    /// Block 0's s3backer metadata.
    Block0,
    /// The options given (no stored geometry found).
    Options,
}

/// An opened volume: its geometry, key layout and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VolumeInfo {
    /// Geometry.
    pub geometry: Geometry,
    /// Key layout.
    pub layout: KeyLayout,
    /// Where the geometry came from.
    pub source: GeometrySource,
}

pub(crate) fn descriptor_key(prefix: &str) -> String {
    KeyLayout::new(prefix, false).meta_key(DESCRIPTOR_NAME)
}

/// Reads the descriptor under `prefix`, `None` when there is none.
pub async fn read_descriptor(store: &dyn ObjectStore, prefix: &str) -> Result<Option<VolumeDescriptor>> {
    let key = descriptor_key(prefix);
    let raw = match store.get_opts(&key_path(&key)?, GetOptions::default()).await {
        Ok(r) if r.meta.size > MAX_DESCRIPTOR_BYTES => {
            return Err(Error::BadMetadata {
                key,
                reason: format!(
                    "not a volume descriptor: {} bytes, a descriptor is under {MAX_DESCRIPTOR_BYTES}",
                    r.meta.size
                ),
            });
        }
        Ok(r) => r.bytes().await.map_err(|e| store_error(e, &key, None))?,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(store_error(e, &key, None)),
    };
    let d: VolumeDescriptor = serde_json::from_slice(&raw).map_err(|e| Error::BadMetadata {
        key: key.clone(),
        reason: format!("not a volume descriptor: {e}"),
    })?;
    if !(FORMAT_VERSION_PLAIN..=FORMAT_VERSION).contains(&d.format) {
        return Err(Error::BadMetadata {
            key,
            reason: format!(
                "format version {} is not supported (this s3block reads {FORMAT_VERSION_PLAIN} to {FORMAT_VERSION})",
                d.format
            ),
        });
    }
    d.geometry().map_err(|e| Error::BadMetadata { key: key.clone(), reason: e.to_string() })?;
    let with_key = |e| match e {
        Error::BadMetadata { reason, .. } => Error::BadMetadata { key: key.clone(), reason },
        e => e,
    };
    d.compressed_with().map_err(with_key)?;
    let params = d.encryption_params().map_err(with_key)?;
    if params.is_some_and(|p| p.is_chunked()) && d.format < FORMAT_VERSION {
        return Err(Error::BadMetadata {
            key,
            reason: format!(
                "format version {} with chunked encryption: such a volume is format {FORMAT_VERSION}",
                d.format
            ),
        });
    }
    Ok(Some(d))
}

/// Block 0's s3backer geometry metadata, trying plain then hashed keys.
pub async fn read_block0_geometry(store: &dyn ObjectStore, prefix: &str) -> Result<Option<(Geometry, bool)>> {
    for hashed in [false, true] {
        let key = KeyLayout::new(prefix, hashed).key(BlockId(0));
        let res =
            match store.get_opts(&key_path(&key)?, GetOptions { head: true, ..Default::default() }).await {
                Ok(r) => r,
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(store_error(e, &key, Some(BlockId(0)))),
            };
        let meta = object_metadata(&res.attributes);
        let get =
            |name: &str| meta.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        let (Some(bs), Some(fs)) = (get(META_BLOCK_SIZE), get(META_FILE_SIZE)) else {
            continue;
        };
        let bad = |what: &str, v: &str| Error::BadMetadata {
            key: key.clone(),
            reason: format!("{what} {v:?} is not a number"),
        };
        let bs: u64 = bs.trim().parse().map_err(|_| bad(META_BLOCK_SIZE, &bs))?;
        let fs: u64 = fs.trim().parse().map_err(|_| bad(META_FILE_SIZE, &fs))?;
        let g = Geometry::new(fs, bs)
            .map_err(|e| Error::BadMetadata { key: key.clone(), reason: e.to_string() })?;
        return Ok(Some((g, hashed)));
    }
    Ok(None)
}

fn check(what: &'static str, stored: u64, requested: Option<u64>, show: fn(u64) -> String) -> Result<()> {
    match requested {
        Some(r) if r != stored => Err(Error::Mismatch { what, stored: show(stored), requested: show(r) }),
        _ => Ok(()),
    }
}

fn show_size(v: u64) -> String {
    format!("{} ({v} bytes)", format_size(v))
}

fn check_geometry(g: &Geometry, opts: &VolumeOptions) -> Result<()> {
    check("block size", g.block_size().into(), opts.block_size, show_size)?;
    check("size", g.size(), opts.size, show_size)
}

/// Opens the volume under `prefix`: geometry from the descriptor, else from
/// block 0, else from `opts` (which then must give the size).
pub async fn open_volume(store: &dyn ObjectStore, prefix: &str, opts: &VolumeOptions) -> Result<VolumeInfo> {
    if let Some(d) = read_descriptor(store, prefix).await? {
        let geometry = d.geometry()?;
        check_geometry(&geometry, opts)?;
        if let Some(h) = opts.hash_prefix
            && h != d.hash_prefix
        {
            return Err(Error::Mismatch {
                what: "hash prefix",
                stored: d.hash_prefix.to_string(),
                requested: h.to_string(),
            });
        }
        return Ok(VolumeInfo {
            geometry,
            layout: KeyLayout::new(prefix, d.hash_prefix),
            source: GeometrySource::Descriptor(d),
        });
    }
    if let Some((geometry, hashed)) = read_block0_geometry(store, prefix).await? {
        check_geometry(&geometry, opts)?;
        if let Some(h) = opts.hash_prefix
            && h != hashed
        {
            return Err(Error::Mismatch {
                what: "hash prefix",
                stored: hashed.to_string(),
                requested: h.to_string(),
            });
        }
        return Ok(VolumeInfo {
            geometry,
            layout: KeyLayout::new(prefix, hashed),
            source: GeometrySource::Block0,
        });
    }
    let Some(size) = opts.size else {
        return Err(Error::NoVolume { prefix: prefix.to_owned(), descriptor: descriptor_key(prefix) });
    };
    let geometry = Geometry::new(size, opts.block_size.unwrap_or(u64::from(DEFAULT_BLOCK_SIZE)))?;
    Ok(VolumeInfo {
        geometry,
        layout: KeyLayout::new(prefix, opts.hash_prefix.unwrap_or(false)),
        source: GeometrySource::Options,
    })
}

/// Creates a volume under `prefix`: writes its descriptor. Refuses when a
/// descriptor or a block 0 is already there.
pub async fn create_volume(
    store: &dyn ObjectStore,
    prefix: &str,
    opts: &VolumeOptions,
) -> Result<VolumeDescriptor> {
    create_volume_with(store, prefix, opts, None).await.map(|(d, _)| d)
}

/// Creates a volume like [`create_volume`], encrypted when `encryption` is
/// given (its parameters and key check go into the descriptor), and returns
/// the codecs to write its blocks with.
///
/// Also refuses when block objects are already stored under the prefix
/// without a descriptor or block 0 (a volume whose descriptor was lost, or
/// an s3backer volume whose block 0 is zero): a new volume would read them
/// as zeros and overwrite them. [`adopt_volume_with`] writes a descriptor
/// for such blocks instead.
pub async fn create_volume_with(
    store: &dyn ObjectStore,
    prefix: &str,
    opts: &VolumeOptions,
    encryption: Option<&EncryptionOptions>,
) -> Result<(VolumeDescriptor, CodecChain)> {
    write_descriptor(store, prefix, opts, encryption, false).await
}

/// Writes a descriptor for block objects already stored under `prefix`
/// whose descriptor was lost (or for an s3backer volume whose block 0 is
/// zero), with the geometry in `opts`, which must be the one the blocks
/// were written with. Refuses, like [`create_volume_with`], when a
/// descriptor or a block 0 is there.
pub async fn adopt_volume_with(
    store: &dyn ObjectStore,
    prefix: &str,
    opts: &VolumeOptions,
    encryption: Option<&EncryptionOptions>,
) -> Result<(VolumeDescriptor, CodecChain)> {
    write_descriptor(store, prefix, opts, encryption, true).await
}

async fn write_descriptor(
    store: &dyn ObjectStore,
    prefix: &str,
    opts: &VolumeOptions,
    encryption: Option<&EncryptionOptions>,
    adopt: bool,
) -> Result<(VolumeDescriptor, CodecChain)> {
    let key = descriptor_key(prefix);
    let size = opts.size.ok_or_else(|| Error::Config("creating a volume needs its size".into()))?;
    let geometry = Geometry::new(size, opts.block_size.unwrap_or(u64::from(DEFAULT_BLOCK_SIZE)))?;
    let compression = opts.compressed_with()?;
    // Where the store ignores conditional creates, two creates at the same
    // moment both succeed: the one whose descriptor is read back wins.
    let enforced = crate::lock::probe_conditional_put(store, prefix).await?;
    let started = std::time::Instant::now();
    if let Some(d) = read_descriptor(store, prefix).await? {
        return Err(Error::Config(format!(
            "a volume already exists at {key} ({} in blocks of {}); refusing to overwrite it",
            format_size(d.size),
            format_size(d.block_size)
        )));
    }
    if let Some((g, _)) = read_block0_geometry(store, prefix).await? {
        return Err(Error::Config(format!(
            "an s3backer volume already exists under prefix {prefix:?} ({g}); refusing to overwrite it"
        )));
    }
    if !adopt && let Some(block_key) = crate::list::first_block_key(store, prefix).await? {
        return Err(Error::StoredBlocksWithoutVolume {
            prefix: prefix.to_owned(),
            example: block_key,
            descriptor: key,
        });
    }
    let id: u128 = rand::rng().random();
    let volume_id = format!("{id:032x}");
    let (params, codecs, format) = match encryption {
        Some(enc) => {
            let (params, cipher) = new_encryption(enc, prefix, &volume_id)?;
            let format = if params.is_chunked() { FORMAT_VERSION } else { FORMAT_VERSION_PLAIN };
            let json = serde_json::to_value(&params)
                .map_err(|e| Error::Config(format!("cannot encode the encryption parameters: {e}")))?;
            (Some(json), cipher.chain(compression)?, format)
        }
        None => (None, volume_codecs(compression, None)?, FORMAT_VERSION_PLAIN),
    };
    let d = VolumeDescriptor {
        format,
        block_size: geometry.block_size().into(),
        size: geometry.size(),
        compression: compression.map(|c| c.level()),
        compression_algorithm: compression.map(|c| c.algorithm()).unwrap_or_default(),
        encryption: params,
        hash_prefix: opts.hash_prefix.unwrap_or(false),
        volume_id,
        created_at: utc_stamp(SystemTime::now()),
    };
    let body =
        serde_json::to_vec_pretty(&d).map_err(|e| Error::Config(format!("cannot encode {key}: {e}")))?;
    let put = PutOptions { mode: PutMode::Create, ..Default::default() };
    let raced =
        || Error::Config(format!("a volume was created at {key} at the same time; refusing to overwrite it"));
    match store.put_opts(&key_path(&key)?, body.into(), put).await {
        Ok(_) => {}
        Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
            return Err(raced());
        }
        Err(e) => return Err(store_error(e, &key, None)),
    }
    if !enforced {
        crate::lock::settle(started.elapsed()).await;
        match read_descriptor(store, prefix).await? {
            Some(stored) if stored.volume_id == d.volume_id => {}
            Some(stored) => {
                tracing::info!(
                    "another create wrote {key} (volume id {}) at the same moment",
                    stored.volume_id
                );
                return Err(raced());
            }
            None => return Err(raced()),
        }
    }
    Ok((d, codecs))
}

/// Opens a volume like [`open_volume`] and returns the codecs to access its
/// blocks with: the descriptor's compression (else `opts.compression`), and
/// its encryption unlocked with `encryption`.
///
/// Refuses a wrong password here, with [`Error::WrongPassword`]: against the
/// descriptor's key check, or for an s3backer volume (no descriptor) against
/// block 0's `s3backer-hmac` when block 0 exists. Refuses an encrypted
/// volume opened without a password, and a password for a volume that is
/// not encrypted.
pub async fn open_volume_with(
    store: &dyn ObjectStore,
    prefix: &str,
    opts: &VolumeOptions,
    encryption: Option<&EncryptionOptions>,
) -> Result<(VolumeInfo, CodecChain)> {
    let volume = open_volume(store, prefix, opts).await?;
    let codecs = volume_codecs_for(store, prefix, &volume, opts, encryption).await?;
    Ok((volume, codecs))
}

/// The codecs of `volume`, found under `prefix` by [`open_volume`], as
/// [`open_volume_with`] returns them (with the same checks), without
/// reading the volume's metadata again.
pub(crate) async fn volume_codecs_for(
    store: &dyn ObjectStore,
    prefix: &str,
    volume: &VolumeInfo,
    opts: &VolumeOptions,
    encryption: Option<&EncryptionOptions>,
) -> Result<CodecChain> {
    let key = descriptor_key(prefix);
    let codecs = match (&volume.source, encryption) {
        (GeometrySource::Descriptor(d), enc) => {
            let cipher = match (d.encryption_params()?, enc) {
                (Some(params), Some(enc)) => Some(unlock(&params, enc, prefix, &d.volume_id, &key)?),
                (Some(params), None) => {
                    return Err(Error::PasswordNeeded {
                        what: format!("the volume at {key} ({})", params.scheme()),
                        why: None,
                    });
                }
                (None, Some(enc)) => {
                    return Err(Error::Mismatch {
                        what: "encryption",
                        stored: "none".into(),
                        requested: enc.scheme.unwrap_or(EncryptionScheme::XChaCha20Poly1305).to_string(),
                    });
                }
                (None, None) => None,
            };
            match cipher {
                Some(cipher) => cipher.chain(d.compressed_with()?)?,
                None => volume_codecs(d.compressed_with()?, None)?,
            }
        }
        (_, None) => volume_codecs(opts.compressed_with()?, None)?,
        (_, Some(enc)) => {
            if enc.scheme == Some(EncryptionScheme::XChaCha20Poly1305) {
                return Err(Error::Config(format!(
                    "no volume descriptor at {key}: s3block's own encryption needs one (create the volume with encryption); a volume s3backer made uses the aes-128-cbc scheme"
                )));
            }
            let codec = S3backerCodec::new(&enc.password, &enc.bucket, prefix);
            check_block0_hmac(store, volume, &codec).await?;
            volume_codecs(opts.compressed_with()?, Some(Arc::new(codec)))?
        }
    };
    Ok(codecs)
}

/// Checks an s3backer volume's password against block 0's HMAC (its only
/// stand-in for a key check); nothing to check when block 0 is absent.
async fn check_block0_hmac(
    store: &dyn ObjectStore,
    volume: &VolumeInfo,
    codec: &S3backerCodec,
) -> Result<()> {
    let block = BlockId(0);
    let key = volume.layout.key(block);
    let res = match store.get_opts(&key_path(&key)?, GetOptions::default()).await {
        Ok(r) => r,
        Err(e) if is_absent(&e) => {
            tracing::warn!(
                "s3backer volume without block 0 ({key}): the password cannot be checked at open; a wrong one shows as \"authentication failed\" on the first block read"
            );
            return Ok(());
        }
        Err(e) => return Err(store_error(e, &key, Some(block))),
    };
    let attributes = res.attributes.clone();
    let encoding =
        attributes.get(&Attribute::ContentEncoding).map(|v| v.as_ref().to_owned()).unwrap_or_default();
    if !encoding.split(',').any(|t| t.trim().eq_ignore_ascii_case(S3backerCodec::NAME)) {
        tracing::warn!(
            "block 0 ({key}) is not encrypted with {} (Content-Encoding {encoding:?}); the password cannot be checked at open",
            S3backerCodec::NAME
        );
        return Ok(());
    }
    // As a block read does: no encoding of a block is this large.
    let max = max_object_size(volume.geometry.block_len());
    if res.meta.size > max {
        return Err(Error::Corrupt {
            block,
            key,
            reason: format!(
                "the object is {} bytes, more than any encoding of a {}-byte block (at most {max})",
                res.meta.size,
                volume.geometry.block_len()
            ),
        });
    }
    let body = res.bytes().await.map_err(|e| store_error(e, &key, Some(block)))?;
    match codec.verify(block, &body, &object_metadata(&attributes)) {
        Some(true) => Ok(()),
        Some(false) => Err(Error::WrongPassword {
            key,
            detail: Some(
                "block 0's s3backer-hmac does not match: a wrong password, bucket name or prefix, or block 0 was altered"
                    .into(),
            ),
        }),
        None => Err(Error::Corrupt {
            block,
            key,
            reason: format!("encrypted, but its {META_HMAC} signature is missing or unreadable"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CodecMeta;
    use crate::{ChunkedXChaChaCodec, KdfParams, META_NONCE, ObjectBlockDevice, Password, XChaChaCodec};
    use bytes::Bytes;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use s3block_core::BlockDevice;

    const PREFIX: &str = "v/";

    fn enc() -> EncryptionOptions {
        let mut o = EncryptionOptions::new(Password::new("pw"), "bucket");
        o.kdf = Some(KdfParams::with_cost(64, 1, 1));
        o
    }

    fn opts() -> VolumeOptions {
        VolumeOptions { size: Some(1 << 20), block_size: Some(256 << 10), ..Default::default() }
    }

    fn block(seed: u8) -> Bytes {
        (0..256 << 10).map(|i: u32| (i / 7) as u8 ^ seed).collect::<Vec<u8>>().into()
    }

    fn device(store: &Arc<InMemory>, d: &VolumeDescriptor, codecs: CodecChain) -> ObjectBlockDevice {
        let store: Arc<dyn ObjectStore> = store.clone();
        ObjectBlockDevice::new(store, KeyLayout::new(PREFIX, false), d.geometry().expect("geometry"))
            .with_codecs(codecs)
    }

    /// The `Content-Encoding` and metadata of block `b`'s object.
    async fn encoding(store: &InMemory, b: u32) -> (Option<String>, CodecMeta) {
        let key = KeyLayout::new(PREFIX, false).key(BlockId(b));
        let res = store
            .get_opts(&key_path(&key).expect("path"), GetOptions { head: true, ..Default::default() })
            .await
            .expect("head");
        let enc = res.attributes.get(&Attribute::ContentEncoding).map(|v| v.as_ref().to_owned());
        (enc, crate::device::object_metadata(&res.attributes))
    }

    async fn raw_descriptor(store: &InMemory) -> serde_json::Value {
        let body = store.get(&key_path(&descriptor_key(PREFIX)).expect("path")).await.expect("get");
        serde_json::from_slice(&body.bytes().await.expect("body")).expect("json")
    }

    async fn put_descriptor(store: &InMemory, json: &serde_json::Value) {
        let body = serde_json::to_vec(json).expect("json");
        store.put(&key_path(&descriptor_key(PREFIX)).expect("path"), body.into()).await.expect("put");
    }

    #[tokio::test]
    async fn a_new_encrypted_volume_is_format_2_and_writes_chunks() {
        let store = Arc::new(InMemory::new());
        let (d, codecs) =
            create_volume_with(store.as_ref(), PREFIX, &opts(), Some(&enc())).await.expect("create");
        assert_eq!(d.format, FORMAT_VERSION);
        assert_eq!(FORMAT_VERSION, 2);
        let json = raw_descriptor(&store).await;
        assert_eq!(json["format"], 2);
        assert_eq!(json["encryption"]["chunk_size"], 65536);
        assert_eq!(codecs.write_names(), [ChunkedXChaChaCodec::NAME]);
        let dev = device(&store, &d, codecs);
        assert!(dev.ranged_reads());
        dev.write_block(BlockId(1), block(1)).await.expect("write");
        let (encoding, meta) = encoding(&store, 1).await;
        assert_eq!(encoding.as_deref(), Some(ChunkedXChaChaCodec::NAME));
        assert!(meta.iter().any(|(k, v)| k == META_NONCE && v.len() == 48), "{meta:?}");
        // Reopened, it reads back, whole and in part.
        let (_, codecs) = open_volume_with(store.as_ref(), PREFIX, &VolumeOptions::default(), Some(&enc()))
            .await
            .expect("open");
        let dev = device(&store, &d, codecs);
        assert_eq!(dev.read_block(BlockId(1)).await.expect("read"), block(1));
        let part = dev.read_partial(BlockId(1), 100_000, 5000).await.expect("read part");
        assert_eq!(&part[..], &block(1)[100_000..105_000]);
        // An unencrypted volume stays format 1.
        let plain = InMemory::new();
        let (d, _) = create_volume_with(&plain, PREFIX, &opts(), None).await.expect("create");
        assert_eq!(d.format, FORMAT_VERSION_PLAIN);
        // A version from beyond is refused, with what this one reads.
        let mut json = raw_descriptor(&store).await;
        json["format"] = 3.into();
        put_descriptor(&store, &json).await;
        let err = read_descriptor(store.as_ref(), PREFIX).await.expect_err("format 3");
        assert!(err.to_string().contains("format version 3 is not supported"), "{err}");
        // Chunks in a format 1 descriptor are refused (an older s3block
        // would write whole objects into such a volume).
        json["format"] = 1.into();
        put_descriptor(&store, &json).await;
        let err = read_descriptor(store.as_ref(), PREFIX).await.expect_err("format 1 with chunks");
        assert!(err.to_string().contains("chunked"), "{err}");
        // And a chunk size other than 64 KiB.
        json["format"] = 2.into();
        json["encryption"]["chunk_size"] = 4096.into();
        put_descriptor(&store, &json).await;
        let err = read_descriptor(store.as_ref(), PREFIX).await.expect_err("4 KiB chunks");
        assert!(err.to_string().contains("4096"), "{err}");
    }

    #[tokio::test]
    async fn a_format_1_encrypted_volume_keeps_writing_whole_objects() {
        let store = Arc::new(InMemory::new());
        let (d, codecs) =
            create_volume_with(store.as_ref(), PREFIX, &opts(), Some(&enc())).await.expect("create");
        // A block in chunks, then the descriptor as an older s3block wrote it.
        device(&store, &d, codecs).write_block(BlockId(2), block(2)).await.expect("write");
        let mut json = raw_descriptor(&store).await;
        json["format"] = 1.into();
        json["encryption"].as_object_mut().expect("object").remove("chunk_size");
        put_descriptor(&store, &json).await;
        let (volume, codecs) =
            open_volume_with(store.as_ref(), PREFIX, &VolumeOptions::default(), Some(&enc()))
                .await
                .expect("open");
        let GeometrySource::Descriptor(old) = &volume.source else { panic!("a descriptor") };
        assert_eq!(old.format, 1);
        assert_eq!(codecs.write_names(), [XChaChaCodec::NAME]);
        let dev = device(&store, &d, codecs);
        assert!(!dev.ranged_reads());
        dev.write_block(BlockId(1), block(1)).await.expect("write");
        assert_eq!(encoding(&store, 1).await.0.as_deref(), Some(XChaChaCodec::NAME));
        assert_eq!(dev.read_block(BlockId(1)).await.expect("read"), block(1));
        let part = dev.read_partial(BlockId(1), 70_000, 100).await.expect("read part");
        assert_eq!(&part[..], &block(1)[70_000..70_100]);
        // Both formats read.
        assert_eq!(dev.read_block(BlockId(2)).await.expect("read chunked"), block(2));
        // A wrong password is still refused at open.
        let mut wrong = enc();
        wrong.password = Password::new("other");
        let err = open_volume_with(store.as_ref(), PREFIX, &VolumeOptions::default(), Some(&wrong))
            .await
            .expect_err("wrong password");
        assert!(matches!(err, Error::WrongPassword { .. }), "{err}");
    }
}
