//! The frontends as `Type=notify` systemd services: a fake service manager
//! (a bound Unix datagram socket passed as `NOTIFY_SOCKET`) records what
//! the mount program and the NBD server tell it.
//!
//! - `READY=1` comes first, and only once the file is mounted (the socket
//!   accepts);
//! - `STATUS=` lines follow and say when written data is not stored yet;
//! - SIGTERM brings `STOPPING=1`; while the stop stores data on a slow
//!   store (every request delayed by `S3BLOCK_INJECT_FAULTS`),
//!   `EXTEND_TIMEOUT_USEC=` arrives with a status saying what is left;
//! - the program exits 0 and the data is in the store.
//!
//! The FUSE test needs /dev/fuse and fusermount3, the NBD test nbdcopy
//! (Debian: fuse3, libnbd-bin); without them they skip, except under
//! `CI=true`, where they fail naming what is missing.

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

#[allow(unused_imports)] // each test file uses part of the shared helpers
mod nbd_support;

use std::io::Write;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nbd_support::{FUSE, NBD, Server, Store, run, tools, write_pattern};
use s3block_testkit::kernel::{Mount, assert_no_panic, fuse_command, is_mounted, kernel_available};

/// Every store request waits this long (milliseconds), so uploads of a
/// few blocks, one at a time, take seconds.
const SLOW: &str = "latency_ms=300";
/// 24 blocks of 64 KiB: about 7 s of uploads at one at a time.
const WRITTEN: usize = 24 * 64 * 1024;

/// One datagram the service manager received, and whether the frontend
/// served at that moment.
#[derive(Debug, Clone)]
struct Message {
    text: String,
    serving: bool,
}

/// A fake service manager: the socket, and what arrived on it.
struct Manager {
    path: PathBuf,
    messages: Arc<Mutex<Vec<Message>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Manager {
    /// Listens at `dir/notify`; `serving` is asked as each datagram arrives.
    fn bind(dir: &Path, serving: impl Fn() -> bool + Send + 'static) -> Manager {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (messages, stop) = (messages.clone(), stop.clone());
            move || {
                let mut buf = vec![0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        messages.lock().unwrap().push(Message { text, serving: serving() });
                    }
                }
            }
        });
        Manager { path, messages, stop, thread: Some(thread) }
    }

    fn all(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits up to `limit` for a message at index `from` or later holding
    /// a line for which `line` is true; returns its index.
    fn wait_for(&self, what: &str, from: usize, limit: Duration, line: impl Fn(&str) -> bool) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let all = self.all();
            if let Some(i) = (from..all.len()).find(|&i| all[i].text.lines().any(&line)) {
                return i;
            }
            assert!(Instant::now() < deadline, "no {what} within {limit:?}; received: {all:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The checks every test makes once the program is stopping: STOPPING=1
    /// after `after`, then a timeout extension and a status saying what is
    /// left to store.
    fn saw_a_stop_that_stored(&self, after: usize) {
        let stopping = self.wait_for("STOPPING=1", after, Duration::from_secs(20), |l| l == "STOPPING=1");
        self.wait_for("EXTEND_TIMEOUT_USEC", stopping, Duration::from_secs(20), |l| {
            l.strip_prefix("EXTEND_TIMEOUT_USEC=")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|us| us >= 10_000_000)
        });
        self.wait_for("a status of what is left", stopping, Duration::from_secs(20), |l| {
            l.starts_with("STATUS=") && (l.contains("left to store") || l.contains("not yet stored"))
        });
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if std::thread::panicking() {
            eprintln!("the service manager received: {:#?}", self.all());
        }
    }
}

/// Checks the start: `READY=1` first, sent while serving, with a status.
fn check_ready(manager: &Manager) -> usize {
    let ready = manager.wait_for("READY=1", 0, Duration::from_secs(60), |l| l == "READY=1");
    let all = manager.all();
    assert_eq!(ready, 0, "READY=1 is the first message: {all:#?}");
    assert!(all[ready].serving, "READY=1 arrived before the frontend served: {all:#?}");
    assert!(all[ready].text.lines().any(|l| l.starts_with("STATUS=")), "{all:#?}");
    ready
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + i / 4093) as u8 | 1).collect()
}

#[test]
fn the_mount_tells_systemd_ready_status_stopping_and_extends_its_stop() {
    if !kernel_available(&[]) {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let dir = tempfile::tempdir().unwrap();
    let sockets = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().to_owned();
    let manager = Manager::bind(sockets.path(), move || is_mounted(&mountpoint));
    let args = ["--size=16M", "--block-size=64K", "--upload-concurrency=1"];
    let mut cmd = fuse_command(FUSE, &url, dir.path(), &args);
    cmd.env("NOTIFY_SOCKET", &manager.path).env("S3BLOCK_INJECT_FAULTS", SLOW);
    let mut mount = Mount::spawn_within(cmd, dir, Duration::from_secs(60), Duration::from_secs(120));
    let ready = check_ready(&manager);
    assert!(manager.all()[ready].text.contains("STATUS=mounted file://"), "{:#?}", manager.all());

    // A write the slow store takes seconds to store; the close waits for it
    // (a close stores what the handle wrote), so it runs beside the test.
    let data = pattern(WRITTEN);
    let file = mount.file();
    let writer = std::thread::spawn({
        let data = data.clone();
        move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
            f.write_all(&data).unwrap();
        }
    });
    let dirty = manager.wait_for("a status with data not stored", ready + 1, Duration::from_secs(20), |l| {
        l.starts_with("STATUS=") && l.contains("not yet stored")
    });
    // A stop while the data is being stored: the unmount waits for the
    // close, and the stop is extended as long as data waits.
    mount.signal("TERM");
    manager.saw_a_stop_that_stored(dirty + 1);
    writer.join().unwrap();
    let status = mount.wait_exit();
    let log = mount.log();
    assert!(status.success(), "exit {status}:\n{log}");
    assert!(log.contains("every block is stored"), "{log}");
    assert_no_panic("the mount program", &log);

    // Every byte is in the store: a new mount (no delays) reads it back.
    let again = tempfile::tempdir().unwrap();
    let mount = Mount::spawn(fuse_command(FUSE, &url, again.path(), &[]), again);
    let mut back = vec![0u8; data.len()];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(mount.file()).unwrap(), &mut back, 0)
        .unwrap();
    assert!(back == data, "the data read back differs from the data written");
    mount.unmount();
    eprintln!("the service manager received: {:#?}", manager.all());
}

#[test]
fn the_nbd_server_tells_systemd_ready_status_stopping_and_extends_its_final_flush() {
    if !tools(&["nbdcopy"]) {
        return;
    }
    let store = Store::local();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nbd.sock");
    let probe = socket.clone();
    let manager = Manager::bind(dir.path(), move || UnixStream::connect(&probe).is_ok());
    let log_path = dir.path().join("log");
    // Its standard error plays the journal's stream (systemd names it in
    // JOURNAL_STREAM): lines then carry their priority and no time.
    let log_file = std::fs::File::create(&log_path).unwrap();
    let journal = {
        use std::os::unix::fs::MetadataExt;
        let meta = log_file.metadata().unwrap();
        format!("{}:{}", meta.dev(), meta.ino())
    };
    let mut child = Command::new(NBD)
        .arg(format!("--socket={}", socket.display()))
        .args(["--size=16M", "--block-size=64K", "--upload-concurrency=1", &store.url])
        .env_remove("S3BLOCK_PREFIX")
        .env_remove("RUST_LOG")
        .env_remove("RUNTIME_DIRECTORY")
        .env("NOTIFY_SOCKET", &manager.path)
        .env("S3BLOCK_INJECT_FAULTS", SLOW)
        .env("JOURNAL_STREAM", &journal)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let ready = check_ready(&manager);
    assert!(manager.all()[ready].text.contains("STATUS=serving file://"), "{:#?}", manager.all());

    // Written without a flush (nbdcopy flushes only with --flush): the data
    // is left to the final flush at stop.
    let image = dir.path().join("image");
    write_pattern(&image, WRITTEN as u64, 7);
    let uri = format!("nbd+unix:///?socket={}", socket.display());
    run("nbdcopy", &[image.to_str().unwrap(), &uri]);
    let dirty = manager.wait_for("a status with data not stored", ready + 1, Duration::from_secs(20), |l| {
        l.starts_with("STATUS=") && l.contains("not yet stored")
    });
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    manager.saw_a_stop_that_stored(dirty + 1);
    let left = manager.wait_for("the final flush's status", dirty + 1, Duration::from_secs(20), |l| {
        l.starts_with("STATUS=") && l.contains("left to store")
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "s3block-nbd did not exit:\n{}", log());
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = log();
    assert!(status.success(), "exit {status}:\n{text}");
    assert!(text.contains("every block is stored"), "{text}");
    assert_no_panic("s3block-nbd", &text);
    // The journal's form: a priority first (<4> a warning, <6> info), no time.
    assert!(text.lines().all(|l| l.len() > 3 && l.starts_with('<') && &l[2..3] == ">"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("<6>") && l.contains("every block is stored")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("<4>") && l.contains("S3BLOCK_INJECT_FAULTS")), "{text}");
    assert!(!text.lines().any(|l| l[3..].starts_with("20")), "timestamps in the journal's lines: {text}");
    assert!(
        manager.all()[left..].iter().any(|m| m.text.contains("EXTEND_TIMEOUT_USEC=")),
        "{:#?}",
        manager.all()
    );

    // Every block is in the store, and reads back the same.
    assert_eq!(store.stored_blocks().len(), 24, "blocks stored");
    let server = Server::start(&store, &["--read-only"]);
    let copy = dir.path().join("copy");
    run("nbdcopy", &[&server.uri(), copy.to_str().unwrap()]);
    let bytes = std::fs::read(&copy).unwrap();
    assert!(bytes[..WRITTEN] == std::fs::read(&image).unwrap()[..], "the data read back differs");
    assert!(bytes[WRITTEN..].iter().all(|&b| b == 0));
    server.stop();
    eprintln!("the service manager received: {:#?}", manager.all());
}

#[test]
fn the_status_says_since_when_the_store_is_unreachable() {
    if !kernel_available(&[]) {
        return;
    }
    let Some(env) = s3block_testkit::s3_env() else { return };
    let proxy = s3block_testkit::proxy::Proxy::start(&env.endpoint);
    let url = format!("s3://{}/{}", env.bucket, s3block_testkit::unique_prefix("service_outage"));
    let dir = tempfile::tempdir().unwrap();
    let sockets = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().to_owned();
    let manager = Manager::bind(sockets.path(), move || is_mounted(&mountpoint));
    let mut cmd = fuse_command(FUSE, &url, dir.path(), &["--size=16M", "--block-size=64K"]);
    cmd.arg(format!("--endpoint={}", proxy.endpoint()))
        .env("AWS_ACCESS_KEY_ID", &env.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &env.secret_access_key)
        .env("AWS_REGION", &env.region)
        .env("NOTIFY_SOCKET", &manager.path);
    let mount = Mount::spawn_within(cmd, dir, Duration::from_secs(60), Duration::from_secs(120));
    let ready = check_ready(&manager);

    // The store goes away while a write waits to be stored (its close
    // waits for the store, so it runs beside the test).
    proxy.cut();
    let cut_at = std::time::SystemTime::now();
    let file = mount.file();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        f.write_all(&pattern(256 * 1024)).unwrap();
    });
    let down = manager.wait_for("a status of the outage", ready + 1, Duration::from_secs(60), |l| {
        l.starts_with("STATUS=") && l.contains("store unreachable since") && l.contains("not yet stored")
    });
    let line = manager.all()[down].text.clone();
    // It names the time the store stopped answering, to the second (UTC).
    let hour = |t: std::time::SystemTime| {
        let s = s3block_store::utc_stamp(t);
        format!("{}-{}-{} {}:", &s[0..4], &s[4..6], &s[6..8], &s[9..11])
    };
    let (at, soon) = (hour(cut_at), hour(cut_at + Duration::from_secs(60)));
    assert!(line.contains(&at) || line.contains(&soon), "{line} does not name the time of the cut, {at}..");
    proxy.restore();
    writer.join().unwrap();
    manager.wait_for("a status once the store is back", down + 1, Duration::from_secs(60), |l| {
        l.starts_with("STATUS=") && l.contains("all written data is stored") && !l.contains("unreachable")
    });
    mount.unmount();
    eprintln!("the service manager received: {:#?}", manager.all());
}
