//! s3block's object-store layer (in progress).
mod codec;
mod counting;
mod error;
mod fault;
mod retry;
mod sidecar;

pub use codec::{Codec, CodecChain, CodecContext, CodecMeta, Deflate};
pub use counting::CountingStore;
pub use error::{classify, store_error};
pub use fault::{FaultConfig, FaultStore, InjectedFault};
pub use retry::{RetryConfig, RetryStore};
pub use sidecar::{SIDECAR_SUFFIX, SidecarStore, StaleAttributes};
mod device;
mod list;
mod lock;
mod volume;
pub use device::{BLOCK_CONTENT_TYPE, DIRECT_DISCARD_MAX, META_BLOCK_SIZE, META_FILE_SIZE, ObjectBlockDevice};
pub use list::{ListPlan, StoredBlock, delete_keys, list_blocks};
pub use lock::{LOCK_NAME, LockInfo, LockMode, LockOptions, META_MOUNT_TOKEN, MountLock, break_lock, hostname, probe_conditional_put, read_lock, utc_stamp};
pub use volume::{DEFAULT_BLOCK_SIZE, DESCRIPTOR_NAME, FORMAT_VERSION, GeometrySource, Volume, VolumeDescriptor, VolumeOptions, create_volume, open_volume, read_block0_geometry, read_descriptor};
mod config;
pub use config::{CredentialSource, Credentials, DEFAULT_ACCESS_FILE, OpenedStore, StoreConfig, StoreKind, parse_access_file};
pub mod conformance;
