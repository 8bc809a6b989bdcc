//! The volume handle: the one way to open or create a volume.

use std::sync::Arc;

use s3block_core::{Error, Geometry, KeyLayout, Result, format_size};

use crate::codec::{CodecChain, Compression};
use crate::config::{OpenedStore, StoreConfig, StoreKind};
use crate::device::ObjectBlockDevice;
use crate::encryption::{EncryptionOptions, EncryptionScheme, KdfParams};
use crate::fence::Fence;
use crate::lock::{LockMode, LockOptions, MountLock, read_lock};
use crate::mounts::{MountRecord, read_mount_record, write_mount_record};
use crate::password::{Password, PasswordPrompt, PasswordSource, obtain_password};
use crate::volume::{
    GeometrySource, VolumeDescriptor, VolumeInfo, VolumeOptions, adopt_volume_with, create_volume_with,
    open_volume, read_descriptor, volume_codecs_for,
};

/// What [`VolumeBuilder::open`] does about a volume that is, or is not,
/// stored under the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Create {
    /// Open the volume stored there; none is [`Error::NoVolume`].
    #[default]
    Never,
    /// Open the volume stored there, or create one (the size must be given)
    /// when there is none: how a mount with `--size` treats a new bucket.
    IfMissing,
    /// Create a volume; one already there (or blocks stored without one)
    /// is refused.
    New,
    /// Write the descriptor for block objects already stored under the
    /// prefix without one, with the size and block size given.
    Adopt,
}

/// A password prompt the builder can keep: given the prompt text, returns
/// the line typed.
type BoxedPrompt = Box<dyn FnMut(&str) -> std::io::Result<String> + Send>;

/// Opens or creates a volume: finds it (geometry from the descriptor, else
/// from s3backer's block 0), checks the geometry asked for against it,
/// unlocks its encryption, takes the mount lock, creates it when asked,
/// and assembles the [`ObjectBlockDevice`] with the volume's codecs, the
/// store's request counters and its list plan.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use s3block_core::BlockDevice;
/// use s3block_store::{Create, StoreConfig, Volume};
///
/// let store = StoreConfig::new("memory:///vol/").open()?;
/// let volume = Volume::builder(store).size(64 << 20).create(Create::IfMissing).open().await?;
/// assert_eq!(volume.geometry().block_size(), 256 * 1024);
/// let device = volume.device().clone();
/// device.write_block(0.into(), vec![7u8; 256 * 1024].into()).await?;
/// volume.close().await?; // releases the mount lock
/// # Ok::<(), s3block_core::Error>(())
/// # }).unwrap();
/// ```
pub struct VolumeBuilder {
    store: OpenedStore,
    name: Option<String>,
    wanted: VolumeOptions,
    create: Create,
    read_only: bool,
    lock: Option<LockOptions>,
    encrypt: Option<Option<EncryptionScheme>>,
    kdf: Option<KdfParams>,
    password: Option<PasswordSource>,
    prompt: Option<BoxedPrompt>,
    given: Option<EncryptionOptions>,
    decode: bool,
    lock_wanted: bool,
    defer_record: bool,
    auto_detect: bool,
    default_encoding: Option<String>,
}

impl std::fmt::Debug for VolumeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeBuilder")
            .field("prefix", &self.store.prefix)
            .field("wanted", &self.wanted)
            .field("create", &self.create)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl VolumeBuilder {
    /// The store the volume is opened in.
    pub(crate) fn opened_store(&self) -> &OpenedStore {
        &self.store
    }

    /// How messages and the password prompt name the volume (its URL, say);
    /// by default its key prefix.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The volume's size: checked against an existing volume, used for a new one.
    pub fn size(mut self, bytes: u64) -> Self {
        self.wanted.size = Some(bytes);
        self
    }

    /// The block size: checked against an existing volume, used for a new
    /// one (default [`DEFAULT_BLOCK_SIZE`](s3block_core::DEFAULT_BLOCK_SIZE)).
    pub fn block_size(mut self, bytes: u64) -> Self {
        self.wanted.block_size = Some(bytes);
        self
    }

    /// Hash-prefixed keys: checked against an existing volume, used for a new one.
    pub fn hash_prefix(mut self, on: bool) -> Self {
        self.wanted.hash_prefix = Some(on);
        self
    }

    /// Deflate level for blocks written: recorded in a new volume; on an
    /// existing one, used only when its descriptor records none.
    pub fn compression(mut self, level: u32) -> Self {
        self.wanted.compression = Some(level);
        self
    }

    /// Algorithm and level for blocks written (deflate or zstd): recorded
    /// in a new volume; on an existing one, used only when its descriptor
    /// records none. [`compression`](Self::compression) is deflate at a level.
    pub fn compress(mut self, compression: Compression) -> Self {
        self.wanted = self.wanted.with_compression(Some(compression));
        self
    }

    /// What to do when a volume is, or is not, stored (default [`Create::Never`]).
    pub fn create(mut self, create: Create) -> Self {
        self.create = create;
        self
    }

    /// Opens without the mount lock and refuses to create (a memory store
    /// excepted, whose volume is new every time). Writes through the device
    /// are the caller's to prevent.
    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }

    /// Takes the mount lock with these options (host name and time recorded)
    /// instead of the defaults. A read-write open always takes the lock.
    pub fn lock_options(mut self, opts: LockOptions) -> Self {
        self.lock = Some(opts);
        self
    }

    /// Encrypts a new volume with `scheme` (`None`: the default scheme), or
    /// opens a volume s3backer made as encrypted (it has no descriptor to
    /// say so).
    pub fn encrypt(mut self, scheme: Option<EncryptionScheme>) -> Self {
        self.encrypt = Some(scheme);
        self
    }

    /// Argon2id costs for a new encrypted volume (tests use small ones).
    pub fn kdf(mut self, params: KdfParams) -> Self {
        self.kdf = Some(params);
        self
    }

    /// Where the password comes from when the volume is encrypted.
    pub fn password(mut self, source: PasswordSource) -> Self {
        self.password = Some(source);
        self
    }

    /// Asks with `prompt` for a password that no [`password`](Self::password)
    /// source gives (twice when creating).
    pub fn prompt(mut self, prompt: impl FnMut(&str) -> std::io::Result<String> + Send + 'static) -> Self {
        self.prompt = Some(Box::new(prompt));
        self
    }

    /// Opens (or creates) with these encryption options, password and all,
    /// instead of reading a password: for a caller that already holds them
    /// (a copy encrypting its destination with its own password).
    pub fn encryption(mut self, options: EncryptionOptions) -> Self {
        self.given = Some(options);
        self
    }

    /// Leaves the [mount record](crate::MountRecord) of a read-write open
    /// unwritten until [`Volume::record_mount`] is called. A frontend with a
    /// disk cache checks the cache against [`Volume::previous_mount`] and
    /// notes the new id in it first, so a crash in between never makes a
    /// valid cache look foreign. Without this the open writes the record
    /// right after taking the lock.
    pub fn defer_mount_record(mut self) -> Self {
        self.defer_record = true;
        self
    }

    /// Takes no mount lock, and does not look for one: for a caller that
    /// only writes the descriptor of a new volume (`s3block create`), or
    /// that checks the lock itself (an inspection tool). A read-only open
    /// otherwise reads the lock to say who holds it.
    pub fn without_lock(mut self) -> Self {
        self.lock_wanted = false;
        self
    }

    /// With `false`, the geometry is not looked for in block 0's s3backer
    /// metadata: a volume without a descriptor has the size and block size
    /// given (both must be), and none is created. A volume with a
    /// descriptor is opened by it as always. For s3backer volumes whose
    /// block 0 is zero, or stores that drop object metadata.
    pub fn auto_detect(mut self, on: bool) -> Self {
        self.auto_detect = on;
        self
    }

    /// Reads a block object without a `Content-Encoding` as if it had
    /// `encoding` (see [`CodecChain::with_default_encoding`]).
    pub fn default_content_encoding(mut self, encoding: Option<String>) -> Self {
        self.default_encoding = encoding;
        self
    }

    /// Opens to look at the objects only: no password is asked, and the
    /// device lists and reads objects but cannot decode encrypted ones.
    pub fn inspect_only(mut self) -> Self {
        self.decode = false;
        self
    }

    /// Opens (or creates) the volume. Errors say what is wrong and which
    /// value: [`Error::NoVolume`], [`Error::Mismatch`] naming the stored and
    /// the requested value, [`Error::Locked`] naming the holder,
    /// [`Error::WrongPassword`]. Nothing is left locked when it fails.
    pub async fn open(mut self) -> Result<Volume> {
        let name = self.name.clone().unwrap_or_else(|| format!("the volume under {:?}", self.store.prefix));
        let found = self.find().await?;
        let encryption = self.resolve_encryption(&name, found.as_ref())?;
        let codecs = match &found {
            Some(info) if self.decode => Some(self.codecs(info, encryption.as_ref()).await?),
            _ => None,
        };
        let lock = if !self.lock_wanted {
            None
        } else if self.read_only {
            if let Some(holder) = read_lock(self.store.store.as_ref(), &self.store.prefix).await? {
                tracing::warn!(
                    "{name} is mounted by {} since {}; this read-only open takes no lock and reads blocks as that mount stores them",
                    holder.host,
                    holder.since
                );
            }
            None
        } else {
            let opts = self.lock.take().unwrap_or_default();
            Some(MountLock::acquire(self.store.store.clone(), &self.store.prefix, opts).await?)
        };
        let made = match found {
            Some(info) => Ok((info, codecs.unwrap_or_default(), false)),
            None => self.make(encryption.as_ref()).await,
        };
        let (info, codecs, created) = match made {
            Ok(m) => m,
            Err(e) => {
                if let Some(lock) = lock
                    && let Err(release) = lock.release().await
                {
                    tracing::warn!("could not release the mount lock after a failed open: {release}");
                }
                return Err(e);
            }
        };
        let mut mounts = None;
        if lock.is_some() {
            let store = self.store.store.as_ref();
            let previous = match read_mount_record(store, &self.store.prefix).await {
                Ok(found) => found,
                Err(e) => {
                    // Unknown is treated as "someone else": a disk cache
                    // written before is then not trusted.
                    tracing::warn!("{e}; taken as a mount by another host");
                    None
                }
            };
            let this = MountRecord::new_mount();
            let mut recorded = false;
            if !self.defer_record {
                if let Err(e) = write_mount_record(store, &self.store.prefix, &this).await {
                    if let Some(lock) = lock
                        && let Err(release) = lock.release().await
                    {
                        tracing::warn!("could not release the mount lock after a failed open: {release}");
                    }
                    return Err(e);
                }
                recorded = true;
            }
            mounts = Some(Mounts { previous, this, recorded });
        }
        if created {
            let id = match &info.source {
                GeometrySource::Descriptor(d) => d.volume_id.as_str(),
                _ => "",
            };
            tracing::info!("created a new volume at {name}: {}, id {id}", describe(&info));
        }
        let device = ObjectBlockDevice::new(self.store.store.clone(), info.layout.clone(), info.geometry)
            .with_codecs(codecs.with_default_encoding(self.default_encoding.take()))
            .with_counters(self.store.counters.clone())
            .with_list_plan(self.store.list_plan);
        let fence = lock.as_ref().map(|l| Arc::new(Fence::new(l.probe())));
        Ok(Volume { store: self.store, name, info, device, lock, fence, created, mounts })
    }

    /// The volume stored under the prefix, or `None` when one is to be
    /// created; refuses what the [`Create`] mode does not allow.
    async fn find(&self) -> Result<Option<VolumeInfo>> {
        let store = self.store.store.as_ref();
        let prefix = &self.store.prefix;
        if matches!(self.create, Create::New | Create::Adopt) {
            // Creating checks what is stored and refuses it, naming it.
            return Ok(None);
        }
        if !self.auto_detect && read_descriptor(store, prefix).await?.is_none() {
            let (Some(size), Some(block_size)) = (self.wanted.size, self.wanted.block_size) else {
                return Err(Error::Config(
                    "geometry detection is off: the size and the block size must be given".into(),
                ));
            };
            return Ok(Some(VolumeInfo {
                geometry: Geometry::new(size, block_size)?,
                layout: KeyLayout::new(prefix, self.wanted.hash_prefix.unwrap_or(false)),
                source: GeometrySource::Options,
            }));
        }
        // Without the size, opening fails exactly when nothing is stored.
        let detect = VolumeOptions { size: None, compression: None, ..self.wanted.clone() };
        match open_volume(store, prefix, &detect).await {
            Ok(info) => {
                if let Some(requested) = self.wanted.size
                    && requested != info.geometry.size()
                {
                    let show = |v: u64| format!("{} ({v} bytes)", format_size(v));
                    return Err(Error::Mismatch {
                        what: "size",
                        stored: show(info.geometry.size()),
                        requested: show(requested),
                    });
                }
                Ok(Some(info))
            }
            Err(e @ Error::NoVolume { .. }) => {
                let may_create = self.create == Create::IfMissing
                    && self.wanted.size.is_some()
                    && (!self.read_only || self.store.kind == StoreKind::Memory);
                if may_create { Ok(None) } else { Err(e) }
            }
            Err(e) => Err(e),
        }
    }

    /// The encryption to create the volume with, or to open it with; `None`
    /// when it is not encrypted (or only inspected).
    fn resolve_encryption(
        &mut self,
        name: &str,
        found: Option<&VolumeInfo>,
    ) -> Result<Option<EncryptionOptions>> {
        let encrypted = match found {
            None => self.encrypt.is_some() || self.given.is_some(),
            Some(info) => {
                self.decode
                    && (self.encrypt.is_some()
                        || self.given.is_some()
                        || matches!(&info.source, GeometrySource::Descriptor(d) if d.is_encrypted()))
            }
        };
        if !encrypted {
            return Ok(None);
        }
        if let Some(given) = &self.given {
            return Ok(Some(given.clone()));
        }
        let password: Password = {
            let prompt = self.prompt.as_deref_mut().map(|p| p as PasswordPrompt<'_>);
            obtain_password(self.password.as_ref(), prompt, name, found.is_none())?
        };
        let mut options = EncryptionOptions::new(password, self.store.kind.encryption_bucket_name());
        options.scheme = self.encrypt.flatten();
        options.kdf = self.kdf.clone();
        Ok(Some(options))
    }

    /// The codecs of the existing volume, its password checked.
    async fn codecs(&self, found: &VolumeInfo, encryption: Option<&EncryptionOptions>) -> Result<CodecChain> {
        let wanted = VolumeOptions {
            compression: self.wanted.compression,
            compression_algorithm: self.wanted.compression_algorithm,
            ..Default::default()
        };
        volume_codecs_for(self.store.store.as_ref(), &self.store.prefix, found, &wanted, encryption).await
    }

    /// Writes the new volume's descriptor (or adopts stored blocks).
    async fn make(&self, encryption: Option<&EncryptionOptions>) -> Result<(VolumeInfo, CodecChain, bool)> {
        let store = self.store.store.as_ref();
        let prefix = &self.store.prefix;
        let opts = VolumeOptions {
            hash_prefix: Some(self.wanted.hash_prefix.unwrap_or(false)),
            ..self.wanted.clone()
        };
        let (d, codecs) = if self.create == Create::Adopt {
            adopt_volume_with(store, prefix, &opts, encryption).await?
        } else {
            create_volume_with(store, prefix, &opts, encryption).await?
        };
        let info = VolumeInfo {
            geometry: d.geometry()?,
            layout: KeyLayout::new(prefix, d.hash_prefix),
            source: GeometrySource::Descriptor(d),
        };
        Ok((info, codecs, true))
    }
}

/// An open volume: its geometry and layout, the assembled device, and the
/// mount lock it holds (when opened read-write). Close it with
/// [`close`](Volume::close) once every block written is stored (a cache
/// over the device is closed first), so the lock is released last.
#[derive(Debug)]
pub struct Volume {
    store: OpenedStore,
    name: String,
    info: VolumeInfo,
    device: ObjectBlockDevice,
    lock: Option<MountLock>,
    fence: Option<Arc<Fence>>,
    created: bool,
    mounts: Option<Mounts>,
}

/// The mount records of a read-write open: the one found, this mount's,
/// and whether this mount's is written yet.
#[derive(Debug)]
struct Mounts {
    previous: Option<MountRecord>,
    this: MountRecord,
    recorded: bool,
}

impl Volume {
    /// A builder for the volume in `store` (from [`StoreConfig::open`]).
    pub fn builder(store: OpenedStore) -> VolumeBuilder {
        VolumeBuilder {
            store,
            name: None,
            wanted: VolumeOptions::default(),
            create: Create::Never,
            read_only: false,
            lock: None,
            encrypt: None,
            kdf: None,
            password: None,
            prompt: None,
            given: None,
            decode: true,
            lock_wanted: true,
            defer_record: false,
            auto_detect: true,
            default_encoding: None,
        }
    }

    /// A builder for the volume at `url` (`s3://bucket/prefix`, `file:///dir`,
    /// `memory://`) with the default store options; named by its URL.
    pub fn at(url: &str) -> Result<VolumeBuilder> {
        Ok(Volume::builder(StoreConfig::new(url).open()?).name(url))
    }

    /// How messages name the volume.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Size and block size.
    pub fn geometry(&self) -> Geometry {
        self.info.geometry
    }

    /// Geometry, key layout and where they were read from.
    pub fn info(&self) -> &VolumeInfo {
        &self.info
    }

    /// The descriptor, for a volume that has one (s3backer's have none).
    pub fn descriptor(&self) -> Option<&VolumeDescriptor> {
        match &self.info.source {
            GeometrySource::Descriptor(d) => Some(d),
            _ => None,
        }
    }

    /// The store it lives in, with its request counters.
    pub fn store(&self) -> &OpenedStore {
        &self.store
    }

    /// The device over the volume's blocks: every read a GET, every write a
    /// PUT. Clones share the store; put a cache over one.
    pub fn device(&self) -> &ObjectBlockDevice {
        &self.device
    }

    /// Whether this open created the volume.
    pub fn created(&self) -> bool {
        self.created
    }

    /// How the mount lock is held: `None` when opened read-only.
    pub fn lock_mode(&self) -> Option<LockMode> {
        self.lock.as_ref().map(MountLock::mode)
    }

    /// The deflate level blocks are written with, if any.
    pub fn compression(&self) -> Option<u32> {
        self.descriptor().and_then(|d| d.compression)
    }

    /// The encryption scheme, for a volume whose descriptor records one.
    pub fn encryption(&self) -> Option<EncryptionScheme> {
        self.descriptor().and_then(|d| d.encryption_params().ok().flatten()).map(|p| p.scheme())
    }

    /// One line for people: size, block size, compression, encryption.
    pub fn description(&self) -> String {
        describe(&self.info)
    }

    /// The record of the last read-write mount as found when this one
    /// opened the volume (see [`MountRecord`]): `None` for a read-only open,
    /// a new volume, or one no s3block mount has recorded.
    pub fn previous_mount(&self) -> Option<&MountRecord> {
        self.mounts.as_ref().and_then(|m| m.previous.as_ref())
    }

    /// This mount's record, for a read-write open: written to the bucket at
    /// open, or by [`record_mount`](Volume::record_mount) after
    /// [`VolumeBuilder::defer_mount_record`].
    pub fn this_mount(&self) -> Option<&MountRecord> {
        self.mounts.as_ref().map(|m| &m.this)
    }

    /// Writes this mount's record to the bucket, if not written yet (a
    /// no-op for a read-only open).
    pub async fn record_mount(&mut self) -> Result<()> {
        if let Some(m) = self.mounts.as_mut()
            && !m.recorded
        {
            write_mount_record(self.store.store.as_ref(), &self.store.prefix, &m.this).await?;
            m.recorded = true;
        }
        Ok(())
    }

    /// The mount lock this open holds: `None` when opened read-only (or
    /// once taken out).
    pub fn lock(&self) -> Option<&MountLock> {
        self.lock.as_ref()
    }

    /// The fence of a read-write open: checks its mount lock and, once the
    /// lock belongs to someone else, refuses writes (see [`Fence`]). A
    /// frontend puts [`FencedDevice`](crate::FencedDevice)s over and under
    /// its caches with it. `None` when opened read-only.
    pub fn fence(&self) -> Option<Arc<Fence>> {
        self.fence.clone()
    }

    /// Takes the mount lock out of the handle, for a caller that releases
    /// it itself after its own last write; the handle then holds none.
    pub fn take_lock(&mut self) -> Option<MountLock> {
        self.lock.take()
    }

    /// Releases the mount lock (if still this volume's). Call once every
    /// block written is stored.
    pub async fn close(mut self) -> Result<()> {
        if let Some(lock) = self.lock.take() {
            lock.release().await?;
        }
        Ok(())
    }
}

fn describe(info: &VolumeInfo) -> String {
    let d = match &info.source {
        GeometrySource::Descriptor(d) => Some(d),
        _ => None,
    };
    let scheme = d.and_then(|d| d.encryption_params().ok().flatten()).map(|p| p.scheme().to_string());
    format!(
        "{} in blocks of {}{}{}{}",
        format_size(info.geometry.size()),
        format_size(info.geometry.block_size().into()),
        d.and_then(|d| d.compressed_with().ok().flatten()).map(|c| format!(", {c}")).unwrap_or_default(),
        scheme.map(|s| format!(", encrypted with {s}")).unwrap_or_default(),
        if info.layout.hash_prefix() { ", hash-prefixed keys" } else { "" },
    )
}
