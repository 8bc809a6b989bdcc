//! The mount lock: one mount of a volume at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, ObjectStore, PutMode, PutOptions, UpdateVersion,
};
use rand::Rng;
use s3block_core::{Error, HolderProcess, KeyLayout, Liveness, Result};

use crate::device::object_metadata;
use crate::error::{is_absent, store_error};
use crate::keys::key_path;
use crate::list::delete_keys;
use crate::sidecar::StaleAttributes;

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

mod body;

pub use body::LockInfo;

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
    /// Host name recorded in the lock. A lock found naming this host whose
    /// holder is gone (see [`LockInfo::liveness`], judged from this
    /// machine's processes) is taken over, so it must be this machine's
    /// name ([`hostname`], the default).
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

/// Finds out whether `store` replaces an object only while it is the
/// version given (`PutMode::Update`, `If-Match`): writes a probe object,
/// then replaces it naming a version it does not have; that must fail. The
/// probe is deleted. Asked only before a stale lock is taken over, so a
/// store that refuses such a replace only after changing something (a
/// local directory's [`SidecarStore`](crate::SidecarStore) rewrites the
/// attributes first, then puts them back) is never asked to replace the
/// lock itself, which another mount may be changing at the same moment.
async fn probe_conditional_update(store: &dyn ObjectStore, prefix: &str) -> Result<bool> {
    let n: u64 = rand::rng().random();
    let key = KeyLayout::new(prefix, false).meta_key(&format!("s3block-probe-{n:016x}"));
    let path = key_path(&key)?;
    store
        .put_opts(&path, "probe".into(), PutOptions::default())
        .await
        .map_err(|e| store_error(e, &key, None))?;
    let wrong = UpdateVersion { e_tag: Some("\"s3block-no-such-version\"".into()), version: None };
    let update = PutOptions { mode: PutMode::Update(wrong), ..Default::default() };
    let enforced = match store.put_opts(&path, "probe".into(), update).await {
        Ok(_) => Ok(false),
        Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => Ok(true),
        Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) => {
            Ok(false)
        }
        Err(e) => Err(store_error(e, &key, None)),
    };
    delete_keys(store, vec![key]).await?;
    enforced
}

/// Reads the lock under `prefix`, `None` when the volume is not locked.
pub async fn read_lock(store: &dyn ObjectStore, prefix: &str) -> Result<Option<LockInfo>> {
    Ok(read_lock_version(store, prefix).await?.map(|(info, _)| info))
}

/// How many times a lock caught between its body and its attributes
/// (see [`StaleAttributes`]) is read again.
const TORN_READS: u32 = 50;

fn is_torn(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::Generic { source, .. } if source.downcast_ref::<StaleAttributes>().is_some())
}

/// [`read_lock`] with the version of the object read (its ETag), for a
/// replacement conditional on it.
async fn read_lock_version(
    store: &dyn ObjectStore,
    prefix: &str,
) -> Result<Option<(LockInfo, UpdateVersion)>> {
    let key = lock_key(prefix);
    let mut torn = 0;
    let res = loop {
        match store.get_opts(&key_path(&key)?, GetOptions::default()).await {
            Ok(r) => break r,
            Err(e) if is_absent(&e) => return Ok(None),
            // On a local directory, a lock being replaced reads for a moment
            // as a body its attributes do not describe: read it again.
            Err(e) if is_torn(&e) && torn < TORN_READS => {
                torn += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(store_error(e, &key, None)),
        }
    };
    let version = UpdateVersion { e_tag: res.meta.e_tag.clone(), version: res.meta.version.clone() };
    let meta = object_metadata(&res.attributes);
    // Only the start of the body is parsed; the rest is not read at all.
    let mut body = Vec::new();
    let mut chunks = res.into_stream();
    while body.len() < body::MAX_LOCK_BODY
        && let Some(chunk) = chunks.next().await
    {
        let chunk = chunk.map_err(|e| store_error(e, &key, None))?;
        body.extend_from_slice(&chunk[..chunk.len().min(body::MAX_LOCK_BODY - body.len())]);
    }
    let token = meta.into_iter().find(|(k, _)| k.eq_ignore_ascii_case(META_MOUNT_TOKEN)).map(|(_, v)| v);
    Ok(Some((LockInfo::parse(&body, token), version)))
}

/// Removes a lock left by a mount that is gone; returns who held it.
pub async fn break_lock(store: &dyn ObjectStore, prefix: &str) -> Result<Option<LockInfo>> {
    let info = read_lock(store, prefix).await?;
    if info.is_some() {
        delete_keys(store, vec![lock_key(prefix)]).await?;
    }
    Ok(info)
}

/// How many times a mount tries to take a lock that changes under it (a
/// stale lock another mount took over first, a lock removed meanwhile).
const TAKE_ATTEMPTS: usize = 3;

/// What one attempt to take the lock came to (refusals are errors).
enum Taken {
    /// This mount holds it.
    Yes,
    /// The lock changed meanwhile: judge it again (`None`: it is gone).
    Changed(Option<LockInfo>),
}

/// One mount taking the lock: the steps of [`MountLock::acquire`].
struct Taker<'a> {
    store: &'a dyn ObjectStore,
    prefix: &'a str,
    key: String,
    path: object_store::path::Path,
    token: &'a str,
    mine: LockInfo,
}

impl Taker<'_> {
    fn locked(&self, info: LockInfo) -> Error {
        Error::Locked { key: self.key.clone(), host: info.host, since: info.since }
    }

    fn is_mine(&self, info: &LockInfo) -> bool {
        info.token.as_deref() == Some(self.token)
    }

    /// Writes this mount's lock with `mode`.
    async fn put(&self, mode: PutMode) -> object_store::Result<object_store::PutResult> {
        let mut attrs = Attributes::new();
        attrs.insert(
            Attribute::Metadata(META_MOUNT_TOKEN.into()),
            AttributeValue::from(self.token.to_owned()),
        );
        let put = PutOptions { mode, attributes: attrs, ..Default::default() };
        self.store.put_opts(&self.path, self.mine.body().into(), put).await
    }

    /// Why the holder of `found` is judged gone, or the refusal naming it.
    fn stale(&self, found: &LockInfo) -> Result<String> {
        match found.liveness(&self.mine.host) {
            Some(Liveness::Gone(why)) => Ok(why),
            Some(Liveness::Alive(why) | Liveness::Unknown(why)) => {
                tracing::info!(
                    "the mount lock {} names this host ({}); not taken over: {why}",
                    self.key,
                    found.describe()
                );
                Err(self.locked(found.clone()))
            }
            _ => Err(self.locked(found.clone())),
        }
    }

    fn log_takeover(&self, stale: &LockInfo, why: &str) {
        tracing::warn!(
            "took over the stale mount lock {} of {}{}: {why}",
            self.key,
            stale.describe(),
            stale.process.boot_id.as_deref().map(|b| format!(", boot id {b}")).unwrap_or_default()
        );
    }

    /// After this mount's write and the settle time: whether the lock is
    /// still this mount's (another mount may have written over it).
    async fn read_back(&self, started: Instant) -> Result<Taken> {
        settle(started.elapsed()).await;
        match read_lock(self.store, self.prefix).await? {
            Some(info) if self.is_mine(&info) => Ok(Taken::Yes),
            Some(info) => {
                tracing::info!(
                    "another mount ({}) took the lock {} at the same moment; this one backs off",
                    info.describe(),
                    self.key
                );
                Err(self.locked(info))
            }
            None => Err(Error::Config(format!(
                "the mount lock {} was removed right after this mount wrote it (by a mount started at the \
                 same moment, or a lock break); nothing was mounted, try again",
                self.key
            ))),
        }
    }

    /// A store that ignores conditional writes: check, write, settle, read
    /// back; a stale lock of this host is written over the same way.
    async fn advisory(&self) -> Result<Taken> {
        let started = Instant::now();
        let stale = match read_lock(self.store, self.prefix).await? {
            Some(found) => Some((self.stale(&found)?, found)),
            None => None,
        };
        self.put(PutMode::Overwrite).await.map_err(|e| store_error(e, &self.key, None))?;
        let taken = self.read_back(started).await?;
        if let Some((why, found)) = stale {
            self.log_takeover(&found, &why);
        }
        Ok(taken)
    }

    /// A store that enforces conditional writes: create; a stale lock of
    /// this host is replaced only while it is the same object.
    async fn enforced(&self) -> Result<Taken> {
        match self.put(PutMode::Create).await {
            Ok(_) => return Ok(Taken::Yes),
            Err(e) if is_exists(&e) => {}
            Err(e) => return Err(store_error(e, &self.key, None)),
        }
        let Some((found, version)) = read_lock_version(self.store, self.prefix).await? else {
            return Ok(Taken::Changed(None));
        };
        if self.is_mine(&found) {
            // A retried create whose first attempt had worked.
            return Ok(Taken::Yes);
        }
        let why = self.stale(&found)?;
        let versioned = version.e_tag.is_some() || version.version.is_some();
        if !versioned || !probe_conditional_update(self.store, self.prefix).await? {
            return self.replace_by_delete(found, version, &why).await;
        }
        match self.put(PutMode::Update(version.clone())).await {
            Ok(_) => {
                self.log_takeover(&found, &why);
                Ok(Taken::Yes)
            }
            Err(e) if is_exists(&e) => match read_lock(self.store, self.prefix).await? {
                // A retried update whose first attempt had worked.
                Some(info) if self.is_mine(&info) => {
                    self.log_takeover(&found, &why);
                    Ok(Taken::Yes)
                }
                other => Ok(Taken::Changed(other)),
            },
            Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) => {
                self.replace_by_delete(found, version, &why).await
            }
            Err(e) => Err(store_error(e, &self.key, None)),
        }
    }

    /// For a store with conditional creates but no conditional replace (a
    /// local directory): deletes the stale lock if it is still the one
    /// judged, creates this mount's, and reads it back after the settle
    /// time, so of two mounts replacing it at once one backs off.
    async fn replace_by_delete(&self, stale: LockInfo, version: UpdateVersion, why: &str) -> Result<Taken> {
        let started = Instant::now();
        match read_lock_version(self.store, self.prefix).await? {
            Some((now, v)) if now == stale && v == version => {}
            other => return Ok(Taken::Changed(other.map(|(info, _)| info))),
        }
        delete_keys(self.store, vec![self.key.clone()]).await?;
        match self.put(PutMode::Create).await {
            Ok(_) => {}
            Err(e) if is_exists(&e) => return Ok(Taken::Changed(read_lock(self.store, self.prefix).await?)),
            Err(e) => return Err(store_error(e, &self.key, None)),
        }
        let taken = self.read_back(started).await?;
        self.log_takeover(&stale, why);
        Ok(taken)
    }
}

static ADVISORY_WARNED: AtomicBool = AtomicBool::new(false);

/// What [`MountLock::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockCheck {
    /// The lock object holds this mount's token.
    Held,
    /// Another mount's lock is there (its token differs): it was taken
    /// over after a forced unlock, or by a mount of another program.
    Taken(LockInfo),
    /// There is no lock object: someone removed it (`s3block unlock
    /// --force`), so someone decided this mount is gone.
    Removed,
}

impl LockCheck {
    /// Who holds the lock now, in words for the log.
    pub fn describe(&self) -> String {
        match self {
            LockCheck::Held => "held by this mount".to_owned(),
            LockCheck::Taken(info) => format!("now held by {}", info.describe()),
            LockCheck::Removed => "removed (by `s3block unlock --force` or a lock break)".to_owned(),
        }
    }
}

/// Reads the lock under `prefix` and compares its token with `token`: one
/// GET (a few more only while a local directory's lock is being replaced).
async fn check_token(store: &dyn ObjectStore, prefix: &str, token: &str) -> Result<LockCheck> {
    Ok(match read_lock(store, prefix).await? {
        Some(info) if info.token.as_deref() == Some(token) => LockCheck::Held,
        Some(info) => LockCheck::Taken(info),
        None => LockCheck::Removed,
    })
}

/// A held mount lock. Release it with [`release`](MountLock::release).
///
/// The lock is the object `{prefix}s3backer-mounted` (s3backer's), with body
/// `hostname\nYYYYMMDDTHHMMSSZ\n` followed by lines naming the holder's
/// process (see [`LockInfo`]) and metadata `s3backer-mount-token` (eight
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
/// A lock left by a mount of this host that is gone (it crashed, or the
/// machine restarted) is taken over without a human; see
/// [`acquire`](MountLock::acquire).
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
    ///
    /// A lock naming this host ([`LockOptions::host`]) whose holder is gone
    /// (see [`LockInfo::liveness`]: this machine restarted since, or the
    /// holder's process no longer runs) is taken over, and the log says so
    /// and why. Where the store enforces conditional writes the stale lock
    /// is replaced only if it is still the same object: by `If-Match` on
    /// its ETag, or, where the store cannot, by deleting it once read again
    /// unchanged, creating this mount's with `If-None-Match` and reading it
    /// back after the settle time. Where the store ignores them, it is
    /// written over and read back after the settle time, as a new lock is.
    /// A lock that records no process (s3backer's, an older s3block's) is
    /// never taken over: nothing proves its holder gone.
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
        // A positive 32-bit number other than s3backer's shared-disk token
        // (0x7fffffff), as s3backer's own tokens are.
        let token = format!("{:08x}", rand::rng().random_range(1..0x7fff_ffff_u32));
        let mine = LockInfo::new(opts.host.clone(), utc_stamp(opts.now), None)
            .with_process(HolderProcess::current());
        let key = lock_key(prefix);
        let path = key_path(&key)?;
        let taker = Taker { store: store.as_ref(), prefix, key, path, token: &token, mine };
        let mut last = None;
        for _ in 0..TAKE_ATTEMPTS {
            let taken = match mode {
                LockMode::Advisory => taker.advisory().await?,
                LockMode::Enforced => taker.enforced().await?,
            };
            match taken {
                Taken::Yes => return Ok(MountLock { store, prefix: prefix.to_owned(), token, mode }),
                Taken::Changed(info) => last = info,
            }
        }
        Err(match last {
            Some(info) => taker.locked(info),
            None => Error::Config(format!(
                "the mount lock {} kept changing while this mount tried to take it; nothing was mounted, try again",
                taker.key
            )),
        })
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

    /// Whether the lock is still this mount's: one GET of the lock object,
    /// its token compared with this mount's. A lock that is gone counts
    /// as lost ([`LockCheck::Removed`]): only a person breaking it (`s3block
    /// unlock --force`) or a mount that took it over and then released it
    /// removes it while this mount runs, and either way another mount may
    /// have written since. See [`Fence`](crate::Fence) for what a mount
    /// does with the answer.
    pub async fn check(&self) -> Result<LockCheck> {
        check_token(self.store.as_ref(), &self.prefix, &self.token).await
    }

    /// A handle that checks this lock ([`LockProbe::check`]) without
    /// owning it, for the mount's [`Fence`](crate::Fence).
    pub fn probe(&self) -> LockProbe {
        LockProbe { store: self.store.clone(), prefix: self.prefix.clone(), token: self.token.clone() }
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

/// Checks a [`MountLock`] it does not own: made by [`MountLock::probe`].
#[derive(Debug, Clone)]
pub struct LockProbe {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    token: String,
}

impl LockProbe {
    /// The same as [`MountLock::check`].
    pub async fn check(&self) -> Result<LockCheck> {
        check_token(self.store.as_ref(), &self.prefix, &self.token).await
    }

    /// The lock object's key.
    pub fn key(&self) -> String {
        lock_key(&self.prefix)
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
    fn opts(host: &str, enforced: Option<bool>) -> LockOptions {
        LockOptions { host: host.into(), now: SystemTime::now(), enforced }
    }

    /// `check` says held, then removed after a forced unlock, then taken
    /// by the mount after it, naming that mount's host.
    #[tokio::test]
    async fn check_tells_held_removed_and_taken_apart() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let a = MountLock::acquire(store.clone(), "v/", opts("host-a", None)).await.expect("lock a");
        assert_eq!(a.mode(), LockMode::Enforced);
        assert_eq!(a.check().await.expect("check"), LockCheck::Held);
        assert_eq!(a.probe().check().await.expect("probe"), LockCheck::Held);
        break_lock(store.as_ref(), "v/").await.expect("break").expect("a lock to break");
        assert_eq!(a.check().await.expect("check"), LockCheck::Removed);
        let b = MountLock::acquire(store.clone(), "v/", opts("host-b", None)).await.expect("lock b");
        match a.check().await.expect("check") {
            LockCheck::Taken(info) => {
                assert_eq!(info.host, "host-b");
                assert_eq!(info.token.as_deref(), Some(b.token()));
            }
            other => panic!("expected Taken, got {other:?}"),
        }
        assert!(a.check().await.expect("check").describe().contains("host-b"));
        assert_eq!(b.check().await.expect("check"), LockCheck::Held);
        assert!(!a.release().await.expect("release a"), "a fenced mount removed the new holder's lock");
        assert!(b.release().await.expect("release b"));
    }

    /// On a store that honours conditional writes (memory), mounts taking
    /// a new lock at once, and mounts taking over one stale lock at once,
    /// end with exactly one holder each time, which `check` confirms.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conditional_creates_and_takeovers_leave_one_holder() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let host = hostname();
        for round in 0..5 {
            let prefix = format!("r{round}/");
            if round % 2 == 1 {
                // A stale lock of this host: its process is gone.
                let mut child = std::process::Command::new("true").spawn().expect("start `true`");
                child.wait().expect("reap `true`");
                let mut gone = HolderProcess::current();
                gone.pid = Some(child.id());
                let stale = LockInfo::new(host.clone(), "20260101T000000Z", None).with_process(gone);
                let mut attrs = Attributes::new();
                attrs.insert(Attribute::Metadata(META_MOUNT_TOKEN.into()), "1badcafe".into());
                let put = PutOptions { attributes: attrs, ..Default::default() };
                let path = key_path(&lock_key(&prefix)).expect("lock key");
                store.put_opts(&path, stale.body().into(), put).await.expect("stale lock");
            }
            let takers: Vec<_> = (0..6)
                .map(|_| {
                    let (store, prefix, host) = (store.clone(), prefix.clone(), host.clone());
                    tokio::spawn(
                        async move { MountLock::acquire(store, &prefix, opts(&host, Some(true))).await },
                    )
                })
                .collect();
            let mut held = Vec::new();
            for t in takers {
                match t.await.expect("taker") {
                    Ok(lock) => held.push(lock),
                    Err(Error::Locked { .. }) => {}
                    Err(e) => panic!("round {round}: {e}"),
                }
            }
            assert_eq!(held.len(), 1, "round {round}: {} mounts hold the lock", held.len());
            let winner = held.pop().expect("one holder");
            assert_eq!(winner.check().await.expect("check"), LockCheck::Held);
            assert!(winner.release().await.expect("release"));
        }
    }

    #[tokio::test]
    async fn stores_that_replace_only_a_given_version_are_told_apart() {
        let memory = object_store::memory::InMemory::new();
        assert!(probe_conditional_update(&memory, "p/").await.expect("probe memory"));
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("local store");
        let local = crate::SidecarStore::new(fs);
        assert!(!probe_conditional_update(&local, "p/").await.expect("probe a local directory"));
        let left = std::fs::read_dir(dir.path().join("p")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "the probe was left behind");
    }
}
