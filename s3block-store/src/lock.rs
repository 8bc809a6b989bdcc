//! The mount lock: one mount of a volume at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use object_store::{Attribute, AttributeValue, Attributes, GetOptions, ObjectStore, PutMode, PutOptions};
use rand::Rng;
use s3block_core::{Error, KeyLayout, Result};

use crate::device::object_metadata;
use crate::error::{is_absent, store_error};
use crate::keys::key_path;
use crate::list::delete_keys;

/// Name of the lock object under the volume's prefix.
pub const LOCK_NAME: &str = "s3backer-mounted";
/// Metadata holding the mount's token.
pub const META_MOUNT_TOKEN: &str = "s3backer-mount-token";

/// `t` as `YYYYMMDDTHHMMSSZ` in UTC.
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// This machine's host name, as the mount lock records it: the one
/// implementation, [`s3block_core::local_hostname`].
pub use s3block_core::local_hostname as hostname;

/// Who holds a lock, as recorded in the lock object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// Host name.
    pub host: String,
    /// When it was taken, `YYYYMMDDTHHMMSSZ`.
    pub since: String,
    /// The mount token, if the object carries one.
    pub token: Option<String>,
}

impl LockInfo {
    /// A holder as a lock object names it.
    pub fn new(host: impl Into<String>, since: impl Into<String>, token: Option<String>) -> Self {
        LockInfo { host: host.into(), since: since.into(), token }
    }
}

/// Whether the store enforces conditional creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockMode {
    /// Taken by conditional create: two mounts can never both hold it.
    Enforced,
    /// Checked then written: the store ignores `If-None-Match`.
    Advisory,
}

/// How to take the lock.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// Host name recorded in the lock.
    pub host: String,
    /// Time recorded in the lock.
    pub now: SystemTime,
    /// Skip the probe: `Some(true)` when the store is known to enforce
    /// conditional creates, `Some(false)` when known not to.
    pub enforced: Option<bool>,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions { host: hostname(), now: SystemTime::now(), enforced: None }
    }
}

fn lock_key(prefix: &str) -> String {
    KeyLayout::new(prefix, false).meta_key(LOCK_NAME)
}

/// Shortest and longest settle time of a write to a store that ignores
/// conditional creates (see [`MountLock`]).
const SETTLE_BOUNDS: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(5));

/// Waits long enough after a write that took `took` (with the check before
/// it) for a competing write to have landed: four times `took`, within
/// [`SETTLE_BOUNDS`].
pub(crate) async fn settle(took: Duration) {
    tokio::time::sleep((took * 4).clamp(SETTLE_BOUNDS.0, SETTLE_BOUNDS.1)).await;
}

fn is_exists(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. })
}

/// Finds out whether `store` enforces `PutMode::Create`: creates a probe
/// object twice; the second create must fail. The probe is deleted.
pub async fn probe_conditional_put(store: &dyn ObjectStore, prefix: &str) -> Result<bool> {
    let n: u64 = rand::rng().random();
    let key = KeyLayout::new(prefix, false).meta_key(&format!("s3block-probe-{n:016x}"));
    let path = key_path(&key)?;
    let create = || PutOptions { mode: PutMode::Create, ..Default::default() };
    match store.put_opts(&path, "probe".into(), create()).await {
        // The key is new: "exists" means a retried create that had worked.
        Ok(_) => {}
        Err(e) if is_exists(&e) => {}
        Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) => {
            return Ok(false);
        }
        Err(e) => return Err(store_error(e, &key, None)),
    }
    let enforced = match store.put_opts(&path, "probe".into(), create()).await {
        Ok(_) => false,
        Err(e) if is_exists(&e) => true,
        Err(e) => {
            let _ = delete_keys(store, vec![key.clone()]).await;
            return Err(store_error(e, &key, None));
        }
    };
    delete_keys(store, vec![key]).await?;
    Ok(enforced)
}

/// Reads the lock under `prefix`, `None` when the volume is not locked.
pub async fn read_lock(store: &dyn ObjectStore, prefix: &str) -> Result<Option<LockInfo>> {
    let key = lock_key(prefix);
    let res = match store.get_opts(&key_path(&key)?, GetOptions::default()).await {
        Ok(r) => r,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(store_error(e, &key, None)),
    };
    let meta = object_metadata(&res.attributes);
    let body = res.bytes().await.map_err(|e| store_error(e, &key, None))?;
    let text = String::from_utf8_lossy(&body);
    let mut lines = text.lines();
    let host = lines.next().unwrap_or("").trim().to_owned();
    let since = lines.next().unwrap_or("").trim().to_owned();
    let token = meta.into_iter().find(|(k, _)| k.eq_ignore_ascii_case(META_MOUNT_TOKEN)).map(|(_, v)| v);
    Ok(Some(LockInfo {
        host: if host.is_empty() { "an unknown host".into() } else { host },
        since: if since.is_empty() { "an unknown time".into() } else { since },
        token,
    }))
}

/// Removes a lock left by a mount that is gone; returns who held it.
pub async fn break_lock(store: &dyn ObjectStore, prefix: &str) -> Result<Option<LockInfo>> {
    let info = read_lock(store, prefix).await?;
    if info.is_some() {
        delete_keys(store, vec![lock_key(prefix)]).await?;
    }
    Ok(info)
}

static ADVISORY_WARNED: AtomicBool = AtomicBool::new(false);

/// A held mount lock. Release it with [`release`](MountLock::release).
///
///
/// The lock is the object `{prefix}s3backer-mounted` (s3backer's), with body
/// `hostname\nYYYYMMDDTHHMMSSZ\n` and metadata `s3backer-mount-token` (eight
/// hex digits). It is taken with a conditional create (`If-None-Match: *`).
/// Some S3 servers accept that header and ignore it (Garage 2.5 does); s3block
/// detects this once per store with a probe object created twice, and there
/// takes the lock by checking first, writing, then waiting a short settle
/// time and reading the lock back: a mount proceeds only if the lock still
/// holds its own token, so of two mounts started at the same instant the one
/// whose write landed last wins and the other backs off, naming it. The
/// settle time is four times what the check and the write took (at least
/// half a second, at most five): longer than another mount can take between
/// finding no lock and writing its own. It says once in the log that the
/// lock is only as safe as that.
///
/// Release deletes the lock only if it still holds this mount's token.
#[derive(Debug)]
pub struct MountLock {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    token: String,
    mode: LockMode,
}

impl MountLock {
    /// Takes the lock of the volume under `prefix`, or fails with
    /// [`Error::Locked`] naming the host and time of the mount holding it.
    pub async fn acquire(store: Arc<dyn ObjectStore>, prefix: &str, opts: LockOptions) -> Result<MountLock> {
        let enforced = match opts.enforced {
            Some(e) => e,
            None => probe_conditional_put(store.as_ref(), prefix).await?,
        };
        let mode = if enforced { LockMode::Enforced } else { LockMode::Advisory };
        if mode == LockMode::Advisory && !ADVISORY_WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "this object store ignores conditional creates (If-None-Match); the mount lock is advisory: two mounts started at the same moment could both take it"
            );
        }
        let token = format!("{:08x}", rand::rng().random::<u32>());
        let key = lock_key(prefix);
        let locked = |info: LockInfo| Error::Locked { key: key.clone(), host: info.host, since: info.since };
        let started = Instant::now();
        if mode == LockMode::Advisory
            && let Some(info) = read_lock(store.as_ref(), prefix).await?
        {
            return Err(locked(info));
        }
        let mut attrs = Attributes::new();
        attrs.insert(Attribute::Metadata(META_MOUNT_TOKEN.into()), AttributeValue::from(token.clone()));
        let put = PutOptions {
            mode: if enforced { PutMode::Create } else { PutMode::Overwrite },
            attributes: attrs,
            ..Default::default()
        };
        let body = format!("{}\n{}\n", opts.host, utc_stamp(opts.now));
        match store.put_opts(&key_path(&key)?, body.into(), put).await {
            Ok(_) => {}
            Err(e) if is_exists(&e) => match read_lock(store.as_ref(), prefix).await? {
                // A retried create whose first attempt had worked.
                Some(info) if info.token.as_deref() == Some(token.as_str()) => {}
                Some(info) => return Err(locked(info)),
                None => return Err(store_error(e, &key, None)),
            },
            Err(e) => return Err(store_error(e, &key, None)),
        }
        if mode == LockMode::Advisory {
            // Another mount may have written its lock over this one.
            settle(started.elapsed()).await;
            match read_lock(store.as_ref(), prefix).await? {
                Some(info) if info.token.as_deref() == Some(token.as_str()) => {}
                Some(info) => {
                    tracing::info!(
                        "another mount ({} since {}) took the lock {key} at the same moment; this one backs off",
                        info.host,
                        info.since
                    );
                    return Err(locked(info));
                }
                None => {
                    return Err(Error::Config(format!(
                        "the mount lock {key} was removed right after this mount wrote it (by a mount \
                         started at the same moment, or a lock break); nothing was mounted, try again"
                    )));
                }
            }
        }
        Ok(MountLock { store, prefix: prefix.to_owned(), token, mode })
    }

    /// This mount's token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether the lock is enforced by the store or advisory.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The lock object's key.
    pub fn key(&self) -> String {
        lock_key(&self.prefix)
    }

    /// Deletes the lock if it is still this mount's; returns whether it was.
    pub async fn release(self) -> Result<bool> {
        match read_lock(self.store.as_ref(), &self.prefix).await? {
            Some(info) if info.token.as_deref() == Some(self.token.as_str()) => {
                delete_keys(self.store.as_ref(), vec![self.key()]).await?;
                Ok(true)
            }
            Some(info) => {
                tracing::warn!(
                    "mount lock {} now belongs to {} (since {}); leaving it in place",
                    self.key(),
                    info.host,
                    info.since
                );
                Ok(false)
            }
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stamps() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        // 2024-02-29 12:34:56 UTC, a leap day.
        assert_eq!(utc_stamp(UNIX_EPOCH + Duration::from_secs(1_709_210_096)), "20240229T123456Z");
        assert_eq!(utc_stamp(UNIX_EPOCH + Duration::from_secs(951_782_400)), "20000229T000000Z");
    }
}
