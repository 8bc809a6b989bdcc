//! The one public error type of s3block.

use std::fmt;

use crate::BlockId;

/// A boxed error from a lower layer (an object store, the network, the OS).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout s3block.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of store failure happened; decides retries and the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The object (or bucket) does not exist.
    NotFound,
    /// Credentials were refused or lack permission.
    Unauthorized,
    /// The endpoint could not be reached, timed out, or answered 5xx; worth retrying.
    Transient,
    /// The request was refused for a reason retrying will not fix.
    Permanent,
    /// A conditional create found the object already there.
    AlreadyExists,
    /// The store does not implement the operation.
    NotSupported,
}

impl StoreErrorKind {
    /// True when the same request may succeed if tried again.
    pub fn is_transient(self) -> bool {
        matches!(self, StoreErrorKind::Transient)
    }
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreErrorKind::NotFound => "not found",
            StoreErrorKind::Unauthorized => "access denied",
            StoreErrorKind::Transient => "temporary failure",
            StoreErrorKind::Permanent => "request refused",
            StoreErrorKind::AlreadyExists => "already exists",
            StoreErrorKind::NotSupported => "not supported",
        })
    }
}

/// Every failure s3block reports, with the block or object key concerned.
///
/// Frontends map these to what their users see (the FUSE binary to an errno,
/// the CLI to an exit code) in one place each.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A size, block size or block count that cannot make a volume.
    #[error("invalid geometry: {0}")]
    InvalidGeometry(String),

    /// A size string such as `30G` that could not be parsed.
    #[error("invalid size {input:?}: {reason}")]
    InvalidSize {
        /// The text given.
        input: String,
        /// Why it was refused.
        reason: String,
    },

    /// An option, URL or configuration value that is wrong.
    #[error("{0}")]
    Config(String),

    /// Nothing under the key prefix makes a volume: no descriptor, no
    /// block 0 carrying s3backer's geometry.
    #[error("no volume under key prefix {prefix:?} (no {descriptor}, no s3backer block 0)")]
    NoVolume {
        /// The key prefix looked under.
        prefix: String,
        /// The descriptor's key.
        descriptor: String,
    },

    /// Block objects are stored under the prefix, but no descriptor and no
    /// block 0 say which volume they make: creating one there would read
    /// them as zeros and overwrite them.
    #[error(
        "block objects are already stored under key prefix {prefix:?} (for example {example}) but there is no \
         {descriptor} and no block 0: they are a volume whose descriptor was lost, or an s3backer volume whose \
         block 0 is zero; refusing to create a new volume over them"
    )]
    StoredBlocksWithoutVolume {
        /// The key prefix.
        prefix: String,
        /// One of the block objects.
        example: String,
        /// The descriptor's key.
        descriptor: String,
    },

    /// The volume is encrypted and no password was given.
    #[error("{what} is encrypted and no password was given{}", why.as_deref().map(|w| format!(", and {w}")).unwrap_or_default())]
    PasswordNeeded {
        /// The volume, as named to the user.
        what: String,
        /// Why none could be asked for, if one was to be asked.
        why: Option<String>,
    },

    /// A block number past the end of the volume.
    #[error("block {block} is outside the volume ({count} blocks)")]
    BlockOutOfRange {
        /// The block asked for.
        block: u64,
        /// Number of blocks in the volume.
        count: u64,
    },

    /// A byte range that is not inside the volume or not inside a block.
    #[error("byte range {offset}..{end} is outside {what} of {size} bytes", end = offset.saturating_add(*len))]
    RangeOutOfBounds {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// "the volume" or "the block".
        what: &'static str,
        /// Size of the volume or block.
        size: u64,
    },

    /// A buffer whose length is not the block size.
    #[error("block {block}: data is {actual} bytes, the block size is {expected}")]
    WrongLength {
        /// The block concerned.
        block: BlockId,
        /// The block size.
        expected: u64,
        /// The length given.
        actual: u64,
    },

    /// A store request failed.
    #[error("{}{key}: {kind}: {source}", block.map(|b| format!("block {b}, key ")).unwrap_or_else(|| "key ".to_owned()))]
    Store {
        /// The block concerned, when the key is a block.
        block: Option<BlockId>,
        /// The object key.
        key: String,
        /// What kind of failure.
        kind: StoreErrorKind,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// An object that exists but cannot be decoded into a block.
    #[error("block {block} (key {key}) is corrupt: {reason}")]
    Corrupt {
        /// The block concerned.
        block: BlockId,
        /// The object key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Options that contradict what the volume was created with.
    #[error("{what} mismatch: the volume was created with {what} {stored}, but {requested} was requested")]
    Mismatch {
        /// Which setting ("block size", "size", ...).
        what: &'static str,
        /// The value the volume has.
        stored: String,
        /// The value the options gave.
        requested: String,
    },

    /// Stored volume metadata that cannot be understood.
    #[error("volume metadata (key {key}) is invalid: {reason}")]
    BadMetadata {
        /// The object key.
        key: String,
        /// What is wrong.
        reason: String,
    },

    /// The password does not open the volume: its key check failed.
    #[error("wrong password for the volume (key check in {key} failed){}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    WrongPassword {
        /// The object holding the key check (the descriptor, or block 0).
        key: String,
        /// More context, when there is some.
        detail: Option<String>,
    },

    /// The volume is mounted elsewhere.
    #[error(
        "volume is already mounted by {host} since {since} (lock object {key}){}",
        crate::holder::lock_facts(host).map(|f| format!("; {f}")).unwrap_or_default()
    )]
    Locked {
        /// The lock object key.
        key: String,
        /// Host name recorded in the lock.
        host: String,
        /// Time recorded in the lock.
        since: String,
    },

    /// This mount's lock was taken by another mount, or removed (`s3block
    /// unlock --force`): the mount is fenced and stores nothing more.
    #[error("the mount lock {key} is no longer this mount's: {now}; this mount stores nothing more (fenced)")]
    Fenced {
        /// The lock object key.
        key: String,
        /// Who holds the lock now (host, process, time), or that it was removed.
        now: String,
    },

    /// A write to a read-only device.
    #[error("the volume is read-only")]
    ReadOnly,

    /// Data that could not be written out; it stays dirty and will be retried.
    #[error("{count} dirty block(s) could not be written, first block {first}: {source}")]
    WriteBack {
        /// How many blocks failed.
        count: usize,
        /// The first failing block.
        first: BlockId,
        /// The first failure.
        #[source]
        source: Box<Error>,
    },

    /// An I/O error on a local file.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The store error kind, when this is a store failure.
    pub fn store_kind(&self) -> Option<StoreErrorKind> {
        match self {
            Error::Store { kind, .. } => Some(*kind),
            Error::WriteBack { source, .. } => source.store_kind(),
            _ => None,
        }
    }

    /// True when retrying the operation may succeed.
    pub fn is_transient(&self) -> bool {
        self.store_kind().is_some_and(StoreErrorKind::is_transient)
    }

    /// True when this mount was fenced: its lock belongs to another mount
    /// (or was removed). Never an outage: retrying cannot succeed.
    pub fn is_fenced(&self) -> bool {
        match self {
            Error::Fenced { .. } => true,
            Error::WriteBack { source, .. } => source.is_fenced(),
            _ => false,
        }
    }

    /// The block this error concerns, if any.
    pub fn block(&self) -> Option<BlockId> {
        match self {
            Error::Store { block, .. } => *block,
            Error::Corrupt { block, .. } | Error::WrongLength { block, .. } => Some(*block),
            Error::WriteBack { first, .. } => Some(*first),
            _ => None,
        }
    }
}
