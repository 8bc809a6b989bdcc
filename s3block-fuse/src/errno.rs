//! The one place where s3block's errors become errno values for the kernel.

use fuser::Errno;
use s3block_core::Error;

use crate::fs::FsError;

/// The errno the kernel gets for `err`, logging what the user needs to know.
///
/// Store failures become EIO and are logged at error level with the block
/// and object key, since the program reading the disk only sees "I/O error".
/// Requests refused by design (read-only, resize, past the end) are logged
/// at debug level: the errno alone tells the caller.
///
/// A change of the device file's size ([`FsError::Resize`]: truncate to
/// another size, fallocate past the end) gets EINVAL, what truncate(2) and
/// ftruncate(2) give on a block device node, and one warning in the log that
/// says the size is fixed and how to get a larger volume: the caller (a copy
/// tool, an image converter) usually shows only "Invalid argument".
/// Opening with `O_TRUNC` is no resize: it succeeds and changes nothing.
///
/// Changes to the directory's fixed entries ([`FsError::Namespace`]:
/// create, mknod, mkdir, rmdir, rename, link, symlink, removing the device
/// file) all get one errno, EPERM ("Operation not permitted"): the request
/// is understood and refused by design, as link(2) and unlink(2) document
/// for an entry a filesystem does not let change. Never ENOSYS, which
/// would say the mount program lacks a feature, nor EROFS, which would
/// claim the mount is read-only.
pub fn errno(err: &FsError) -> Errno {
    let errno = match err {
        FsError::Device(e) => return device_errno(e),
        FsError::NotFound(_) | FsError::NoInode(_) => Errno::ENOENT,
        FsError::IsDir => Errno::EISDIR,
        FsError::NotDir => Errno::ENOTDIR,
        FsError::ReadOnly(_) => Errno::EROFS,
        FsError::NoSpace { .. } => Errno::ENOSPC,
        FsError::Resize { .. } => {
            tracing::warn!("refused: {err}");
            return Errno::EINVAL;
        }
        FsError::FallocateMode(_) => Errno::EOPNOTSUPP,
        FsError::NotPermitted(_) | FsError::Namespace(_) => Errno::EPERM,
    };
    tracing::debug!(errno = errno.code(), "refused: {err}");
    errno
}

fn device_errno(err: &Error) -> Errno {
    match err {
        Error::ReadOnly => {
            tracing::debug!("refused: {err}");
            Errno::EROFS
        }
        Error::WrongPassword { .. } => {
            // Refused at start; here only if a layer re-opens the volume.
            tracing::error!("{err}");
            Errno::EACCES
        }
        Error::Fenced { .. } => {
            // Said once, loudly, when the fence tripped.
            tracing::debug!("refused: {err}");
            Errno::EIO
        }
        Error::RangeOutOfBounds { .. } | Error::BlockOutOfRange { .. } => {
            tracing::error!("request outside the volume: {err}");
            Errno::ENOSPC
        }
        _ => {
            // Store, Corrupt, WriteBack, Io, Locked, ... : the message names
            // the block and the object key.
            tracing::error!(block = ?err.block(), "I/O error: {err}");
            Errno::EIO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3block_core::{BlockId, StoreErrorKind};

    #[test]
    fn each_error_has_its_errno() {
        let store = Error::Store {
            block: Some(BlockId(7)),
            key: "p/00000007".into(),
            kind: StoreErrorKind::Transient,
            source: "connection reset".into(),
        };
        let corrupt = Error::Corrupt { block: BlockId(1), key: "p/00000001".into(), reason: "short".into() };
        let cases: Vec<(FsError, i32)> = vec![
            (store.into(), libc::EIO),
            (corrupt.into(), libc::EIO),
            (Error::ReadOnly.into(), libc::EROFS),
            (Error::Fenced { key: "p/s3backer-mounted".into(), now: "removed".into() }.into(), libc::EIO),
            (Error::WrongPassword { key: "p/s3block-volume.json".into(), detail: None }.into(), libc::EACCES),
            (FsError::ReadOnly("write"), libc::EROFS),
            (FsError::NoSpace { what: "write", offset: 10, size: 10 }, libc::ENOSPC),
            (FsError::Resize { requested: 0, size: 10 }, libc::EINVAL),
            (FsError::NotFound("x".into()), libc::ENOENT),
            (FsError::NoInode(9), libc::ENOENT),
            (FsError::IsDir, libc::EISDIR),
            (FsError::NotDir, libc::ENOTDIR),
            (FsError::FallocateMode(8), libc::EOPNOTSUPP),
            (FsError::NotPermitted("x"), libc::EPERM),
            (FsError::Namespace("rename"), libc::EPERM),
        ];
        for (err, code) in cases {
            assert_eq!(errno(&err).code(), code, "{err}");
        }
    }
}
