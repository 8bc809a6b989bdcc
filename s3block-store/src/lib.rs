//! s3block's object-store layer: blocks as objects, in s3backer's format.
//!
//! [`ObjectBlockDevice`] is a [`BlockDevice`](s3block_core::BlockDevice)
//! whose blocks are objects of an `object_store` store, chosen by URL with
//! [`StoreConfig`]: `s3://bucket/prefix`, `file:///dir` or `memory://`.
//! Around it:
//!
//! - codecs ([`CodecChain`], [`Deflate`], [`Zstd`]): how a block's bytes become an
//!   object's; reads obey each object's own `Content-Encoding`;
//! - client-side encryption ([`EncryptionOptions`], [`create_volume_with`],
//!   [`open_volume_with`]): XChaCha20-Poly1305 with an Argon2id key by
//!   default ([`XChaChaCodec`]), s3backer's AES-128-CBC + HMAC-SHA1 to
//!   migrate ([`S3backerCodec`]); compression runs before encryption; a
//!   wrong password is refused at open; passwords come from a prompt, a
//!   file or [`PASSWORD_ENV`] ([`PasswordSource`]), never the command line;
//! - zero elision: an all-zero block is deleted, an absent one reads as zeros;
//! - the volume descriptor and geometry detection ([`create_volume`],
//!   [`open_volume`]);
//! - the mount lock ([`MountLock`], [`break_lock`]);
//! - `ObjectStore` wrappers that compose by generics: [`RetryStore`]
//!   (backoff with full jitter, bounded time), [`CountingStore`] (request
//!   and byte counts), [`SidecarStore`] (attributes for the local
//!   directory), [`BandwidthStore`] (upload and download caps, a token
//!   bucket each), [`SplitWriteStore`] (writes through a client whose PUTs
//!   carry the storage class and ACL of [`S3Options`]), and, with the
//!   `testing` feature only, `FaultStore` (seeded
//!   errors and latency);
//! - listing in parallel key ranges ([`list_blocks`]) and bulk delete
//!   ([`delete_keys`]);
//! - `conformance` (with the `testing` feature): the checks every store
//!   must pass.
//!
//! It is not a cache: every read is a GET and every write a PUT. The cache
//! crate sits on top.
//!
//! # Opening a volume
//!
//! [`Volume`] is the one way to open or create one, the way the mount
//! program and the `s3block` command do: it reads the geometry, checks it,
//! unlocks encryption, holds the mount lock and assembles the device.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use s3block_core::{BlockDeviceExt, Bytes};
//! use s3block_store::{Create, Volume};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let url = format!("file://{}", dir.path().display());
//! let volume = Volume::at(&url)?.size(1 << 30).create(Create::New).open().await?;
//! assert_eq!(volume.geometry().block_count(), 4096); // 256 KiB blocks by default
//! volume.device().write_at(5_000_000, Bytes::from_static(b"stored as one object")).await?;
//! volume.close().await?;
//!
//! // Found again from its descriptor; a wrong size would be refused.
//! let again = Volume::at(&url)?.read_only(true).open().await?;
//! assert_eq!(&again.device().read_at(5_000_000, 6).await?[..], b"stored");
//! # Ok::<(), s3block_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Choices
//!
//! - **Local attributes in sidecars.** `LocalFileSystem` cannot store
//!   `Content-Encoding` or metadata, so [`SidecarStore`] keeps them in
//!   `<key>.s3block-attrs`, checksummed against the object so a crash between
//!   the two writes never decodes a block wrongly (see its docs).
//! - **One retry loop.** `object_store`'s S3 retries are off; [`RetryStore`]
//!   retries what [`classify`] calls transient and fails 4xx at once.
//! - **Zero blocks stay absent when encrypted.** As with s3backer, an
//!   all-zero block has no object even on an encrypted volume: storing an
//!   encrypted zero block would cost a PUT and storage for every block
//!   ever trimmed, and the bucket listing then reveals which blocks are zero
//!   (and object sizes how well the others compress). That is the trade-off.
//! - **What authentication covers.** The native scheme binds each object to
//!   its volume and block number; an older object of the same block still
//!   authenticates (refusing it would need a trusted record of versions).
//! - **Advisory lock where needed.** Stores that ignore `If-None-Match` are
//!   detected by [`probe_conditional_put`]; the lock is then advisory and the
//!   log says so once.

#[cfg(feature = "clap")]
mod args;
mod bandwidth;
mod bodypool;
pub mod chain;
mod codec;
#[cfg(feature = "clap")]
mod compress_args;
mod config;
#[cfg(feature = "testing")]
pub mod conformance;
mod counting;
mod device;
mod discover;
mod encryption;
mod erase;
mod error;
#[cfg(feature = "testing")]
mod fault;
#[cfg(feature = "testing")]
mod faultenv;
mod fence;
mod handle;
#[cfg(feature = "clap")]
mod hints;
mod keys;
mod list;
mod lock;
mod mounts;
mod native;
mod offload;
mod password;
mod quickack;
mod resize;
mod retry;
mod s3backer_crypto;
mod s3options;
mod sidecar;
mod stored;
mod volume;

#[cfg(feature = "clap")]
pub use args::StoreArgs;
pub use bandwidth::{Bandwidth, BandwidthLimits, BandwidthStore, TokenBucket};
pub use bodypool::BufferPool;
pub use codec::{
    Codec, CodecChain, CodecContext, CodecMeta, Compression, CompressionAlgorithm, Deflate, KNOWN_ENCODINGS,
    Zstd, parse_content_encoding,
};
#[cfg(feature = "clap")]
pub use compress_args::{CompressArgs, CompressChoice};
pub use config::{
    CredentialSource, Credentials, DEFAULT_ACCESS_FILE, OpenedStore, StoreConfig, StoreKind,
    parse_access_file,
};
pub use counting::CountingStore;
pub use device::{
    BLOCK_CONTENT_TYPE, DIRECT_DISCARD_MAX, META_BLOCK_SIZE, META_FILE_SIZE, ObjectBlockDevice,
};
pub use discover::list_volumes;
pub use encryption::{EncryptionOptions, EncryptionParams, EncryptionScheme, KdfParams, volume_codecs};
pub use erase::Erase;
pub use error::{classify, store_error};
#[cfg(feature = "testing")]
pub use fault::{FaultConfig, FaultStore, InjectedFault};
#[cfg(feature = "testing")]
pub use faultenv::{FaultSpec, INJECT_FAULTS_ENV};
pub use fence::{Fence, FencedDevice, LOCK_CHECK_EVERY, UPLOAD_RECHECK};
pub use handle::{Create, Volume, VolumeBuilder};
#[cfg(feature = "clap")]
pub use hints::{command_hint, with_hint};
pub use keys::{check_prefix, key_path};
pub use list::{
    ListPlan, StoredBlock, any_block_stored, delete_keys, first_block_key, for_each_stored_block, list_blocks,
};
pub use lock::{
    LOCK_NAME, LockCheck, LockInfo, LockMode, LockOptions, LockProbe, META_MOUNT_TOKEN, MountLock,
    break_lock, hostname, probe_conditional_put, read_lock, utc_stamp,
};
pub use mounts::{MOUNT_RECORD_NAME, MountRecord, mount_record_key, read_mount_record, write_mount_record};
pub use native::{ChunkedXChaChaCodec, META_NONCE, XChaChaCodec};
pub use password::{PASSWORD_ENV, Password, PasswordPrompt, PasswordSource, obtain_password};
pub use quickack::QUICKACK_ENV;
#[cfg(feature = "testing")]
pub use resize::RESIZE_STOP_ENV;
pub use resize::{
    ResizePlan, ResizeReport, apply_resize, current_descriptor, plan_resize, tail_refusal, write_size,
};
pub use retry::{RetryConfig, RetryStore};
pub use s3backer_crypto::{META_HMAC, S3BACKER_CIPHER, S3BACKER_PBKDF2_ITERATIONS, S3backerCodec};
pub use s3options::{
    CANNED_ACLS, S3Options, STORAGE_CLASSES, ServerSideEncryption, SplitWriteStore, parse_canned_acl,
    parse_storage_class,
};
pub use sidecar::{SIDECAR_SUFFIX, SidecarStore, StaleAttributes};
pub use stored::{MAX_RUNS as STORED_MAX_RUNS, StoredCount, StoredSource, StoredTally};
pub use volume::{
    DESCRIPTOR_NAME, FORMAT_VERSION, FORMAT_VERSION_PLAIN, GeometrySource, VolumeDescriptor, VolumeInfo,
    VolumeOptions, adopt_volume_with, create_volume, create_volume_with, open_volume, open_volume_with,
    read_block0_geometry, read_descriptor,
};

/// S3 Standard list price of PUT, COPY, POST and LIST requests, in dollars
/// per 1,000: what frontends show the cost of a volume's requests at.
pub const PUT_PRICE_PER_1000: f64 = 0.005;
/// S3 Standard list price of GET and HEAD requests, in dollars per 1,000.
pub const GET_PRICE_PER_1000: f64 = 0.0004;
/// S3 Standard list price of storage, in dollars per GB (2^30 bytes) a
/// month (first 50 TB tier): what frontends show a volume's stored bytes
/// cost at.
pub const STORAGE_PRICE_PER_GB_MONTH: f64 = 0.023;
