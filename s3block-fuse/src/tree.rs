//! [`Tree`]: what a FUSE session serves, one volume ([`BlockFs`]) or
//! several ([`MultiFs`]), with one set of calls for the session glue.

use std::ffi::OsStr;
use std::sync::Arc;

use bytes::Bytes;
use fuser::{FileAttr, FopenFlags};

use crate::fs::{BlockFs, DirEntry, FsError, FsResult, SetAttr};
use crate::multi::MultiFs;

/// The filesystem a session serves: one volume, or several.
#[derive(Debug)]
pub enum Tree {
    /// One volume: the device file, stats and control of a one-volume mount.
    One(Arc<BlockFs>),
    /// Several volumes.
    Many(Arc<MultiFs>),
}

macro_rules! both {
    ($self:ident, $fs:ident => $call:expr) => {
        match $self {
            Tree::One($fs) => $call,
            Tree::Many($fs) => $call,
        }
    };
}

impl Tree {
    /// See [`BlockFs::lookup`].
    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<FileAttr> {
        both!(self, fs => fs.lookup(parent, name))
    }
    /// See [`BlockFs::getattr`].
    pub fn getattr(&self, ino: u64) -> FsResult<FileAttr> {
        both!(self, fs => fs.getattr(ino))
    }
    /// See [`BlockFs::setattr`].
    pub fn setattr(&self, ino: u64, set: SetAttr) -> FsResult<FileAttr> {
        both!(self, fs => fs.setattr(ino, set))
    }
    /// See [`BlockFs::readdir`].
    pub fn readdir(&self, ino: u64, offset: u64) -> FsResult<Vec<DirEntry>> {
        both!(self, fs => fs.readdir(ino, offset))
    }
    /// See [`BlockFs::open`].
    pub fn open(&self, ino: u64, write: bool) -> FsResult<(u64, FopenFlags)> {
        both!(self, fs => fs.open(ino, write))
    }
    /// See [`BlockFs::open_control`].
    pub fn open_control(&self, uid: u32) -> FsResult<(u64, FopenFlags)> {
        both!(self, fs => fs.open_control(uid))
    }
    /// See [`BlockFs::release`].
    pub fn release(&self, ino: u64, fh: u64) {
        both!(self, fs => fs.release(ino, fh))
    }
    /// See [`BlockFs::read`].
    pub async fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        both!(self, fs => fs.read(ino, fh, offset, size).await)
    }
    /// See [`BlockFs::write`].
    pub async fn write(&self, ino: u64, offset: u64, data: Bytes) -> FsResult<u32> {
        both!(self, fs => fs.write(ino, offset, data).await)
    }
    /// See [`BlockFs::control_write`].
    pub async fn control_write(&self, fh: u64, data: Bytes) -> FsResult<u32> {
        both!(self, fs => fs.control_write(fh, data).await)
    }
    /// See [`BlockFs::flush`].
    pub async fn flush(&self, ino: u64, fh: u64) -> FsResult<()> {
        both!(self, fs => fs.flush(ino, fh).await)
    }
    /// See [`BlockFs::sync`].
    pub async fn sync(&self, ino: u64) -> FsResult<()> {
        both!(self, fs => fs.sync(ino).await)
    }
    /// See [`BlockFs::fallocate`].
    pub async fn fallocate(&self, ino: u64, offset: u64, len: u64, mode: i32) -> FsResult<()> {
        both!(self, fs => fs.fallocate(ino, offset, len, mode).await)
    }
    /// See [`BlockFs::unlink`].
    pub fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        both!(self, fs => fs.unlink(parent, name))
    }
    /// Creating, renaming, linking: always refused.
    pub fn change_entries(&self, what: &'static str) -> FsResult<()> {
        Err(FsError::Namespace(what))
    }
    /// See [`BlockFs::statfs`].
    pub fn statfs(&self) -> (u64, u64, u32) {
        both!(self, fs => fs.statfs())
    }
}
