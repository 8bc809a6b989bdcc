//! What the `nbd_*` tests share: the `s3block-nbd` program of this tree
//! started on a Unix socket of its own, the user-space NBD clients (libnbd's
//! `nbdinfo`, `nbdcopy`, `nbdfuse`; qemu's `qemu-img`, `qemu-io`), and the
//! stores a test runs on (a local directory, Garage).
//!
//! A missing tool or server skips the test with a message, except under
//! `CI=true`, where the test fails naming what is missing.

#![allow(dead_code)] // each test file uses part of it

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use s3block_testkit::kernel::{assert_no_panic, on_path};
use s3block_testkit::{in_ci, s3_env, unique_prefix};

/// The NBD server program, built by this package from its own source.
pub(crate) const NBD: &str = env!("CARGO_BIN_EXE_rel-s3block-nbd");
/// The mount program, built by this package.
pub(crate) const FUSE: &str = env!("CARGO_BIN_EXE_rel-s3block-fuse");

/// True when every program in `tools` is on PATH. Otherwise prints what is
/// missing and returns false, except under `CI=true`, where it panics
/// naming it (Debian: `apt-get install libnbd-bin qemu-utils`).
pub(crate) fn tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "cannot run this NBD test: {} not on PATH (Debian packages libnbd-bin and qemu-utils)",
        missing.join(", ")
    );
    assert!(!in_ci(), "CI=true and {message}");
    eprintln!("SKIPPED (not under CI): {message}");
    false
}

/// Where a test's volume lives, and the environment the programs need to
/// reach it.
pub(crate) struct Store {
    /// The STORE argument.
    pub(crate) url: String,
    /// Variables for the programs (the Garage endpoint).
    pub(crate) env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
    /// The S3 server and key prefix of a Garage store.
    s3: Option<(s3block_testkit::S3Env, String)>,
}

impl Store {
    /// A volume in a fresh local directory (`file://`).
    pub(crate) fn local() -> Store {
        let dir = tempfile::tempdir().expect("temp dir");
        Store { url: format!("file://{}", dir.path().display()), env: Vec::new(), _dir: Some(dir), s3: None }
    }

    /// A volume in the server's memory, gone when it exits.
    pub(crate) fn memory() -> Store {
        Store { url: "memory://".into(), env: Vec::new(), _dir: None, s3: None }
    }

    /// A volume under a key prefix of its own in the Garage test bucket;
    /// `None` (skipped) when no server is configured, outside CI.
    pub(crate) fn garage(name: &str) -> Option<Store> {
        let env = s3_env()?;
        let prefix = unique_prefix(name);
        Some(Store {
            url: format!("s3://{}/{prefix}", env.bucket),
            env: vec![("S3BLOCK_ENDPOINT".into(), env.endpoint.clone())],
            _dir: None,
            s3: Some((env, prefix)),
        })
    }

    /// The stores of a test that runs on both: the local directory, and
    /// Garage when it is there.
    pub(crate) fn local_and_garage(name: &str) -> Vec<Store> {
        let mut stores = vec![Store::local()];
        stores.extend(Store::garage(name));
        stores
    }

    /// The kind of store, for messages.
    pub(crate) fn kind(&self) -> &str {
        self.url.split("://").next().unwrap_or("?")
    }

    /// The volume's stored block objects: the block numbers of its
    /// 8-hex-digit keys (files of a local directory, objects under the
    /// prefix on Garage), sorted. Not for a memory store.
    pub(crate) fn stored_blocks(&self) -> Vec<u64> {
        let names: Vec<String> = match &self.s3 {
            Some((env, prefix)) => {
                use futures::TryStreamExt;
                use object_store::ObjectStore;
                let store = env.store();
                let root = object_store::path::Path::from(prefix.trim_end_matches('/'));
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let listed: Vec<_> =
                    runtime.block_on(store.list(Some(&root)).try_collect()).expect("list the bucket");
                listed.into_iter().filter_map(|o| o.location.filename().map(str::to_owned)).collect()
            }
            None => {
                let dir = self.url.strip_prefix("file://").expect("a local or Garage store");
                std::fs::read_dir(dir)
                    .expect("read the store directory")
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            }
        };
        let mut blocks: Vec<u64> = names
            .into_iter()
            .filter(|n| n.len() == 8)
            .filter_map(|n| u64::from_str_radix(&n, 16).ok())
            .collect();
        blocks.sort_unstable();
        blocks
    }
}

/// A running `s3block-nbd`, on a Unix socket in a directory of its own;
/// killed on drop if it still runs.
pub(crate) struct Server {
    child: Option<Child>,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Server {
    /// Starts the server of `store` with `args` and waits until it serves.
    ///
    /// # Panics
    /// When it exits first or does not serve within a minute (with its log).
    pub(crate) fn start(store: &Store, args: &[&str]) -> Server {
        match Server::try_start(store, args) {
            Ok(server) => server,
            Err((status, log)) => panic!("s3block-nbd exited with {status} before serving:\n{log}"),
        }
    }

    /// [`Server::start`], returning the exit status and log of a server
    /// that exits before serving.
    pub(crate) fn try_start(store: &Store, args: &[&str]) -> Result<Server, (ExitStatus, String)> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("log");
        let socket = dir.path().join("nbd.sock");
        let mut cmd = Command::new(NBD);
        cmd.arg(format!("--socket={}", socket.display()))
            .arg(format!("--stats-file={}", dir.path().join("stats").display()))
            .arg("--stats-interval=1")
            .args(args)
            .arg(&store.url)
            .envs(store.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("S3BLOCK_INJECT_FAULTS")
            .env_remove("S3BLOCK_PREFIX")
            .env_remove("RUST_LOG")
            .env_remove("RUNTIME_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the server log"));
        let child = cmd.spawn().expect("start s3block-nbd");
        let mut server = Server { child: Some(child), dir, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !server.log().contains("as NBD export") {
            if let Some(status) = server.child_mut().try_wait().expect("poll s3block-nbd") {
                server.child = None;
                return Err((status, server.log()));
            }
            assert!(Instant::now() < deadline, "s3block-nbd does not serve after 60 s:\n{}", server.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("s3block-nbd still runs")
    }

    /// The Unix socket.
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.path().join("nbd.sock")
    }

    /// The NBD URI of the export, for libnbd and qemu.
    pub(crate) fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket().display())
    }

    /// The stats text file.
    pub(crate) fn stats_file(&self) -> PathBuf {
        self.dir.path().join("stats")
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("s3block-nbd still runs").id()
    }

    /// The server's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends signal `name` (`TERM`, `INT`, ...).
    pub(crate) fn signal(&self, name: &str) {
        let ok = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{name} failed");
    }

    /// Waits up to `limit` for the exit.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("poll s3block-nbd") {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "s3block-nbd did not exit in {limit:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then exit 0 with every block stored, the socket removed
    /// and no panic; returns the log.
    pub(crate) fn stop(mut self) -> String {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(120));
        let log = self.log();
        assert!(status.success(), "s3block-nbd exited with {status}:\n{log}");
        assert!(log.contains("every block is stored"), "{log}");
        assert!(!self.socket().exists(), "the socket is removed at exit");
        assert_no_panic("s3block-nbd", &log);
        log
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("s3block-nbd log:\n{}", self.log());
        }
    }
}

pub(crate) use s3block_testkit::kernel::{run, run_output as output};

/// The SHA-256 of a file or device (`sha256sum`), in hex.
pub(crate) fn sha256(path: &Path) -> String {
    let out = run("sha256sum", &[path.to_str().expect("UTF-8 path")]);
    out.split_whitespace().next().expect("sha256sum prints a hash").to_owned()
}

/// `count` bytes of a repeating, position-dependent pattern (every 8-byte
/// word holds its own offset, xor `seed`), written to `path`: any block
/// stored at the wrong place, or not at all, changes the hash.
pub(crate) fn write_pattern(path: &Path, count: u64, seed: u64) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create the pattern file"));
    let mut chunk = Vec::with_capacity(1 << 20);
    let mut offset = 0u64;
    while offset < count {
        chunk.clear();
        let end = (offset + (1 << 20)).min(count);
        let mut at = offset;
        while at < end {
            chunk.extend_from_slice(&((at ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1).to_le_bytes());
            at += 8;
        }
        chunk.truncate((end - offset) as usize);
        file.write_all(&chunk).expect("write the pattern file");
        offset = end;
    }
    file.flush().expect("write the pattern file");
}
