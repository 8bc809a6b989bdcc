//! The FUSE glue: kernel requests in, [`BlockFs`] calls, replies out.
//!
//! fuser reads requests on a few threads. A request that may touch the
//! store is first run right there, on the FUSE thread, until it would wait
//! for something (a fetch, an upload, room for dirty data): most requests
//! (cache hits, writes with room) finish without waiting and are answered
//! with no hand-off to another thread, and a miss starts its fetch at once.
//! One that must wait is moved onto the tokio runtime together with its
//! reply (fuser's replies are `Send`) and finished there, so a FUSE thread
//! never waits on the network and a slow block never holds up others.
//! Nothing here holds a lock across I/O.
//!
//! Every task is tracked by [`InFlight`]; at exit the program waits for all
//! of them, so no request is still writing when the final flush starts.

use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, SystemTime};

use fuser::{
    FileHandle, Filesystem, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, MountOption,
    OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, SessionACL, TimeOrNow, WriteFlags,
};
use s3block_store::BufferPool;
use tokio::runtime::Handle;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::errno::errno;
use crate::fs::{BlockFs, CONTROL_INO, SetAttr};
use crate::multi::MultiFs;
use crate::tree::Tree;

/// Largest write the kernel is asked to send in one request, at any block
/// size (see [`max_write_for`]).
pub const MAX_WRITE: u32 = 1 << 20;
/// Largest write asked for at the smallest block sizes.
const MIN_MAX_WRITE: u32 = 128 << 10;

/// The largest write the kernel is asked to send in one request to a
/// volume of `block_size`-byte blocks: 32 blocks, within 128 KiB and
/// [`MAX_WRITE`] (4K blocks: 128 KiB; 8K: 256 KiB; 32K and larger: 1 MiB).
///
/// Each FUSE thread reads requests into a buffer of its own, and the pages
/// of it the largest request touched stay resident; a write of more than
/// 512 KiB is also copied into a buffer of the write pool, one of which is
/// kept idle. At small blocks a large request saves only round trips with
/// the kernel, since it is cut into one write per block anyway: measured
/// with 4K blocks and a 64 MiB cache holding 32 MiB written in 1 MiB
/// requests, 1 MiB requests left 2 MiB of the two threads' buffers and
/// 1 MiB of the write pool resident, 5% of the daemon's peak.
pub fn max_write_for(block_size: u32) -> u32 {
    block_size.saturating_mul(32).clamp(MIN_MAX_WRITE, MAX_WRITE)
}

/// Read-ahead asked of the kernel (it may grant less).
pub const MAX_READAHEAD: u32 = 1 << 20;
/// How long the kernel may cache attributes and names.
const TTL: Duration = Duration::from_secs(1);
/// FUSE request threads; they only parse and hand over to the runtime.
const FUSE_THREADS: usize = 2;

/// Requests being served, so the exit can wait for them.
#[derive(Debug, Clone, Default)]
pub struct InFlight(TaskTracker);

impl InFlight {
    /// Refuses new requests (they get EIO), then waits until none is in flight.
    pub async fn drain(&self) {
        self.0.close();
        self.0.wait().await;
    }

    /// Counts a new request in flight until the token is dropped; `None`
    /// once a drain has started. Counted before the check, so a drain that
    /// starts in between waits for this request.
    fn admit(&self) -> Option<TaskTrackerToken> {
        let token = self.0.token();
        (!self.0.is_closed()).then_some(token)
    }
}

/// The `fuser::Filesystem` over a [`BlockFs`] (or a [`MultiFs`]).
#[derive(Debug)]
pub struct FuseFs {
    fs: Arc<Tree>,
    rt: Handle,
    in_flight: InFlight,
    /// The largest write asked of the kernel.
    max_write: u32,
    /// Buffers for the copies of large writes (up to `max_write`), reused
    /// once the blocks they were written into are stored and evicted. One
    /// idle buffer is kept (`max_write` bytes, counted in the program's
    /// baseline): a sequential write frees about one for each it takes.
    writes: Arc<BufferPool>,
}

impl FuseFs {
    /// Serves `fs`, running I/O on the runtime behind `rt`, with writes of
    /// up to [`max_write_for`] its block size.
    pub fn new(fs: Arc<BlockFs>, rt: Handle, in_flight: InFlight) -> Self {
        let max_write = max_write_for(fs.device().geometry().block_size());
        Self::serving(Tree::One(fs), rt, in_flight, max_write)
    }

    /// Serves several volumes, as `fs` shows them. Writes of up to
    /// [`MAX_WRITE`]: volumes of any block size may be added later.
    pub fn many(fs: Arc<MultiFs>, rt: Handle, in_flight: InFlight) -> Self {
        Self::serving(Tree::Many(fs), rt, in_flight, MAX_WRITE)
    }

    fn serving(tree: Tree, rt: Handle, in_flight: InFlight, max_write: u32) -> Self {
        let writes = BufferPool::new(max_write as usize);
        FuseFs { fs: Arc::new(tree), rt, in_flight, max_write, writes }
    }

    /// Runs `work` here until it would wait, then on the runtime. If the
    /// mount is shutting down, the work is dropped with its reply unsent
    /// and fuser answers EIO.
    fn spawn<F, Fut>(&self, work: F)
    where
        F: FnOnce(Arc<Tree>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(token) = self.in_flight.admit() else {
            return;
        };
        let fs = self.fs.clone();
        run_here_or_spawn(&self.rt, async move {
            work(fs).await;
            drop(token);
        });
    }
}

/// Polls `task` once on this thread, in `rt`'s context (its timers and
/// spawns work); spawns it on `rt` when it must wait. True when it
/// finished here.
///
/// The first poll's waker is a no-op, which is enough: a pending task is
/// spawned, and the runtime polls it again at once, registering its own
/// waker for whatever it waits on.
fn run_here_or_spawn(rt: &Handle, task: impl Future<Output = ()> + Send + 'static) -> bool {
    let mut task = Box::pin(task);
    let _context = rt.enter();
    if task.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_ready() {
        return true;
    }
    rt.spawn(task);
    false
}

fn time_of(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(nearest) = config.set_max_write(self.max_write) {
            let _ = config.set_max_write(nearest);
        }
        if let Err(nearest) = config.set_max_readahead(MAX_READAHEAD) {
            let _ = config.set_max_readahead(nearest);
        }
        let _ = config.set_max_background(64);
        // Direct I/O submitted asynchronously (a loop device with
        // `--direct-io=on`, a database's O_DIRECT with native AIO, fio's
        // libaio) reaches the mount as that many requests at once, not one
        // after the other: 16 random 4 KiB reads in flight on a cold 1M
        // volume went 927 reads/s against 334 without it (Garage, by hand).
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO) {
            tracing::info!(
                ?missing,
                "the kernel serves asynchronous direct I/O to the mount one request at a time"
            );
        }
        // O_TRUNC comes with the open instead of as a truncate to 0, which
        // could not be told from `truncate -s 0`: the open ignores it, as a
        // block device does (see `BlockFs`), and a real resize is refused.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC) {
            tracing::warn!(
                ?missing,
                "the kernel does not pass O_TRUNC with open: opening the device file with O_TRUNC will fail"
            );
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set =
            SetAttr { mode, uid, gid, size, atime: atime.map(time_of), mtime: mtime.map(time_of), ctime };
        match self.fs.setattr(ino.0, set) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        match self.fs.readdir(ino.0, offset) {
            Ok(entries) => {
                for entry in entries {
                    if reply.add(INodeNo(entry.ino), entry.next_offset, entry.kind, &entry.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // O_TRUNC (here since `init` asks for FUSE_ATOMIC_O_TRUNC) is ignored:
        // the device file keeps its size and bytes, as a block device does.
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let opened =
            if ino.0 == CONTROL_INO { self.fs.open_control(req.uid()) } else { self.fs.open(ino.0, write) };
        match opened {
            Ok((fh, fopen)) => reply.opened(FileHandle(fh), fopen),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        tracing::debug!(ino = ino.0, offset, size, "read");
        self.spawn(move |fs| async move {
            match fs.read(ino.0, fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        tracing::debug!(ino = ino.0, offset, size = data.len(), "write");
        let data = self.writes.copy_from_slice(data);
        self.spawn(move |fs| async move {
            let written = if ino.0 == CONTROL_INO {
                fs.control_write(fh.0, data).await
            } else {
                fs.write(ino.0, offset, data).await
            };
            match written {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn flush(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        self.spawn(move |fs| async move { sync_reply(fs.flush(ino.0, fh.0).await, reply) });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(ino.0, fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.spawn(move |fs| async move { sync_reply(fs.sync(ino.0).await, reply) });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (blocks, free, bsize) = self.fs.statfs();
        reply.statfs(blocks, free, free, 3, 0, bsize, 255, bsize);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        refuse(&self.fs, "create", |e| reply.error(e));
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        refuse(&self.fs, "mknod", |e| reply.error(e));
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        refuse(&self.fs, "mkdir", |e| reply.error(e));
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        refuse(&self.fs, "rmdir", |e| reply.error(e));
    }

    fn symlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, _target: &Path, reply: ReplyEntry) {
        refuse(&self.fs, "symlink", |e| reply.error(e));
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        refuse(&self.fs, "rename", |e| reply.error(e));
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        refuse(&self.fs, "link", |e| reply.error(e));
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        tracing::debug!(ino = ino.0, offset, length, mode, "fallocate");
        self.spawn(
            move |fs| async move { sync_reply(fs.fallocate(ino.0, offset, length, mode).await, reply) },
        );
    }
}

/// Answers a change to the directory's entries with its errno.
fn refuse(fs: &Tree, what: &'static str, reply: impl FnOnce(fuser::Errno)) {
    let refused = fs.change_entries(what).err().unwrap_or(crate::fs::FsError::Namespace(what));
    reply(errno(&refused));
}

fn sync_reply(result: crate::fs::FsResult<()>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

/// fuser's session configuration: mount options, access and threads.
///
/// `fsname=s3block`, `subtype=s3block` (the mount shows as `fuse.s3block`),
/// `default_permissions` (the kernel checks the file mode), `allow_other`
/// when asked (`-o allow_other`; the program passes it when running as
/// root, so a loop device and other users can open the file), `ro` when
/// read-only, plus kernel flags given with `-o`.
pub fn mount_config(read_only: bool, kernel_flags: &[String], allow_other: bool) -> fuser::Config {
    let mut options = vec![
        MountOption::FSName("s3block".into()),
        MountOption::Subtype("s3block".into()),
        MountOption::DefaultPermissions,
    ];
    options.push(if read_only { MountOption::RO } else { MountOption::RW });
    for flag in kernel_flags {
        options.push(match flag.as_str() {
            "dev" => MountOption::Dev,
            "nodev" => MountOption::NoDev,
            "suid" => MountOption::Suid,
            "nosuid" => MountOption::NoSuid,
            "exec" => MountOption::Exec,
            "noexec" => MountOption::NoExec,
            "atime" => MountOption::Atime,
            "noatime" => MountOption::NoAtime,
            "sync" => MountOption::Sync,
            "async" => MountOption::Async,
            "dirsync" => MountOption::DirSync,
            other => MountOption::CUSTOM(other.to_owned()),
        });
    }
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = if allow_other { SessionACL::All } else { SessionACL::Owner };
    config.n_threads = Some(FUSE_THREADS);
    config.clone_fd = true;
    config
}

/// Asks the kernel to unmount `mountpoint`, as a user would: `fusermount3
/// -u`, else `fusermount -u`, else `umount`. The session then ends by itself.
pub fn unmount(mountpoint: &Path) -> Result<(), String> {
    run_first_tool(mountpoint, [("fusermount3", &["-u"][..]), ("fusermount", &["-u"]), ("umount", &[])])
}

/// Detaches `mountpoint` even while it is busy (`fusermount3 -uz`, else
/// `fusermount -uz`, else `umount -l`): the mount point is free at once, and
/// the file's users get errors once the program exits.
pub fn detach(mountpoint: &Path) -> Result<(), String> {
    run_first_tool(mountpoint, [("fusermount3", &["-uz"][..]), ("fusermount", &["-uz"]), ("umount", &["-l"])])
}

/// Runs the first of `tools` that exists on `mountpoint`.
fn run_first_tool(mountpoint: &Path, tools: [(&str, &[&str]); 3]) -> Result<(), String> {
    let mut last = String::new();
    for (program, args) in tools {
        match std::process::Command::new(program).args(args).arg(mountpoint).output() {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                last = format!("{program}: {}", String::from_utf8_lossy(&out.stderr).trim());
                // The tool ran and refused (busy, not mounted): another tool will not do better.
                return Err(last);
            }
            Err(e) => last = format!("{program}: {e}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_follows_options() {
        let c = mount_config(true, &["noatime".to_string()], true);
        assert!(c.mount_options.contains(&MountOption::RO));
        assert!(c.mount_options.contains(&MountOption::NoAtime));
        assert!(c.mount_options.contains(&MountOption::FSName("s3block".into())));
        assert_eq!(c.acl, SessionACL::All);
        let c = mount_config(false, &[], false);
        assert!(c.mount_options.contains(&MountOption::RW));
        assert_eq!(c.acl, SessionACL::Owner);
        assert_eq!(c.n_threads, Some(FUSE_THREADS));
    }

    #[tokio::test]
    async fn drain_waits_for_requests_then_refuses() {
        let in_flight = InFlight::default();
        let request = in_flight.admit().expect("admitted before the drain");
        let task = tokio::spawn({
            let in_flight = in_flight.clone();
            async move { in_flight.drain().await }
        });
        tokio::task::yield_now().await;
        assert!(!task.is_finished(), "drain returned with a request in flight");
        assert!(in_flight.admit().is_none(), "a request was admitted during the drain");
        drop(request);
        task.await.unwrap();
        assert!(in_flight.admit().is_none());
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn work_that_need_not_wait_finishes_on_the_calling_thread_and_the_rest_on_the_runtime() {
        use std::sync::Mutex;
        use std::thread::{self, ThreadId};

        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let here = thread::current().id();
        let ran_on: Arc<Mutex<Vec<ThreadId>>> = Arc::default();
        // Ready at once, though it uses the runtime (a spawn, a timer
        // created): answered here.
        let seen = ran_on.clone();
        let done_here = run_here_or_spawn(rt.handle(), async move {
            drop(tokio::spawn(async {}));
            drop(tokio::time::sleep(Duration::from_millis(1)));
            seen.lock().unwrap().push(thread::current().id());
        });
        assert!(done_here);
        assert_eq!(*ran_on.lock().unwrap(), [here]);
        // Waiting on a timer and then on a channel: moved to the runtime,
        // and woken there, although the first poll's waker did nothing.
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let seen = ran_on.clone();
        let done_here = run_here_or_spawn(rt.handle(), async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let got = rx.await.unwrap();
            seen.lock().unwrap().push(thread::current().id());
            done_tx.send(got).unwrap();
        });
        assert!(!done_here);
        thread::sleep(Duration::from_millis(50));
        tx.send(7).unwrap();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)).unwrap(), 7);
        let ran_on = ran_on.lock().unwrap();
        assert_eq!(ran_on.len(), 2);
        assert_ne!(ran_on[1], here, "the waiting work finished on a runtime thread");
    }
}
