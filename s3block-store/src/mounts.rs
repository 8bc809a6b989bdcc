//! The record of a volume's last read-write mount by s3block.
//!
//! A disk cache (see `s3block_cache::DiskCache`) keeps blocks of a volume on
//! the local disk across restarts, dirty ones included. It may serve them
//! only while nobody else has written the volume since: blocks another host
//! wrote in between would be read back stale, and dirty blocks recovered
//! after a crash would overwrite newer data. The mount lock cannot tell,
//! because a clean unmount deletes it.
//!
//! So every read-write open of a volume (any frontend, and the `s3block`
//! commands that write) replaces the object `{prefix}s3block-last-mount`
//! with a fresh random id, after taking the mount lock. A disk cache records
//! the id of the mount it was written under; at the next start, the id the
//! bucket holds is that one exactly when no other s3block mount has written
//! the volume in between. The record costs one GET and one PUT per
//! read-write mount. s3backer does not write it: a volume written by
//! s3backer between two s3block mounts with the same cache directory is not
//! detected by this record.
//!
//! Body: one JSON object, `{"mount": "<32 hex digits>", "host": "...",
//! "since": "YYYYMMDDTHHMMSSZ"}`. s3backer ignores the object; its name ends
//! in no hex digits, so it is never taken for a block.

use std::time::SystemTime;

use object_store::{GetOptions, ObjectStore, PutOptions, PutPayload};
use rand::Rng;
use s3block_core::{Error, KeyLayout, Result};
use serde::{Deserialize, Serialize};

use crate::error::store_error;
use crate::keys::key_path;
use crate::lock::{hostname, utc_stamp};

/// The name of the record under the volume's prefix.
pub const MOUNT_RECORD_NAME: &str = "s3block-last-mount";

/// Longest record body read: a record is about 100 bytes; anything far
/// larger is not one.
const MAX_RECORD_BYTES: usize = 4096;

/// Who last mounted a volume read-write, as recorded in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MountRecord {
    /// A random id, new at every read-write mount: 32 lowercase hex digits.
    pub mount: String,
    /// The host of that mount.
    pub host: String,
    /// When it was mounted, UTC, `YYYYMMDDTHHMMSSZ`.
    pub since: String,
}

impl MountRecord {
    /// A record for a new mount of this host, now, with a fresh random id.
    pub fn new_mount() -> Self {
        let id: u128 = rand::rng().random();
        MountRecord { mount: format!("{id:032x}"), host: hostname(), since: utc_stamp(SystemTime::now()) }
    }

    fn parse(key: &str, body: &[u8]) -> Result<Self> {
        let bad = |reason: String| Error::BadMetadata { key: key.to_owned(), reason };
        if body.len() > MAX_RECORD_BYTES {
            return Err(bad(format!("{} bytes; a mount record is under {MAX_RECORD_BYTES}", body.len())));
        }
        let record: MountRecord = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
        if record.mount.is_empty() || record.mount.len() > 64 {
            return Err(bad(format!("mount id {:?} is not one s3block writes", record.mount)));
        }
        Ok(record)
    }
}

/// The key of the record under `prefix`.
pub fn mount_record_key(prefix: &str) -> String {
    KeyLayout::new(prefix, false).meta_key(MOUNT_RECORD_NAME)
}

/// Reads the record under `prefix`: `None` when no s3block mount has
/// written the volume since the record was introduced (or since `erase`).
/// A record that is not one (bad JSON, too large) is an error naming it.
pub async fn read_mount_record(store: &dyn ObjectStore, prefix: &str) -> Result<Option<MountRecord>> {
    let key = mount_record_key(prefix);
    match store.get_opts(&key_path(&key)?, GetOptions::default()).await {
        Ok(r) => {
            if r.meta.size > MAX_RECORD_BYTES as u64 {
                return Err(Error::BadMetadata {
                    key,
                    reason: format!("{} bytes; a mount record is under {MAX_RECORD_BYTES}", r.meta.size),
                });
            }
            let body = r.bytes().await.map_err(|e| store_error(e, &key, None))?;
            MountRecord::parse(&key, &body).map(Some)
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(store_error(e, &key, None)),
    }
}

/// Replaces the record under `prefix` with `record`.
pub async fn write_mount_record(store: &dyn ObjectStore, prefix: &str, record: &MountRecord) -> Result<()> {
    let key = mount_record_key(prefix);
    let body = serde_json::to_vec(record).map_err(|e| Error::Config(format!("mount record: {e}")))?;
    store
        .put_opts(&key_path(&key)?, PutPayload::from(body), PutOptions::default())
        .await
        .map_err(|e| store_error(e, &key, None))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn a_record_round_trips_and_a_new_mount_gets_a_new_id() {
        let store = InMemory::new();
        assert_eq!(read_mount_record(&store, "v/").await.expect("read nothing"), None);
        let first = MountRecord::new_mount();
        write_mount_record(&store, "v/", &first).await.expect("write");
        assert_eq!(read_mount_record(&store, "v/").await.expect("read"), Some(first.clone()));
        let second = MountRecord::new_mount();
        assert_ne!(first.mount, second.mount);
        assert_eq!(second.mount.len(), 32);
        write_mount_record(&store, "v/", &second).await.expect("replace");
        assert_eq!(read_mount_record(&store, "v/").await.expect("read again"), Some(second));
        assert_eq!(read_mount_record(&store, "other/").await.expect("other prefix"), None);
    }

    #[tokio::test]
    async fn a_record_that_is_not_one_is_an_error_naming_it() {
        let store = InMemory::new();
        let key = mount_record_key("v/");
        for body in [&b"not json"[..], br#"{"mount": "", "host": "h", "since": "s"}"#, &[b' '; 5000][..]] {
            store
                .put_opts(
                    &key_path(&key).expect("path"),
                    PutPayload::from(body.to_vec()),
                    PutOptions::default(),
                )
                .await
                .expect("put");
            let err = read_mount_record(&store, "v/").await.expect_err("bad record");
            assert!(err.to_string().contains(&key), "{err}");
        }
    }
}
