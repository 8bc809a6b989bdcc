//! `--metrics`: the mount program and s3block-nbd of this tree serve
//! `/metrics`, scraped over TCP as Prometheus would, and the counters move
//! with what is written through the device.
//!
//! The mount test needs /dev/fuse and fusermount3; without them it says so
//! and passes, except under `CI=true`, where it fails naming what is missing.

#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

mod nbd_support;

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use nbd_support::{FUSE, NBD, Server, Store, output};
use s3block_testkit::kernel::{Mount, fuse_command, kernel_available};

/// A port free now on 127.0.0.1 (taken by nothing until the program binds it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 request to `port`: the status code and the body.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The value of the series `name` whose labels include every one of
/// `labels` (`method="PUT"`), in a scrape's `body`.
fn value(body: &str, name: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            series.split('{').next() == Some(name) && labels.iter().all(|want| series.contains(want))
        })
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{body}"))
}

/// A scrape of `port` that must succeed.
fn scrape(port: u16) -> String {
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("# TYPE s3block_requests_total counter\n"), "{body}");
    body
}

#[test]
fn a_mount_serves_metrics_that_follow_the_writes() {
    if !kernel_available(&[]) {
        return;
    }
    let bucket = tempfile::tempdir().unwrap();
    let url = format!("file://{}", bucket.path().display());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let args = ["--size=4M", "--block-size=64K", "--metrics", &addr];
    let mount = Mount::spawn_within(
        fuse_command(FUSE, &url, dir.path(), &args),
        dir,
        Duration::from_secs(30),
        Duration::from_secs(60),
    );

    let before = scrape(port);
    let store = [r#"store="file""#];
    assert_eq!(value(&before, "s3block_lock_held", &store), 1.0);
    assert_eq!(value(&before, "s3block_store_reachable", &store), 1.0);
    let puts = |b: &str| value(b, "s3block_requests_total", &[r#"method="PUT""#, r#"outcome="ok""#]);
    let uploads = |b: &str| value(b, "s3block_requests_by_purpose_total", &[r#"purpose="block_upload""#]);
    assert_eq!(uploads(&before), 0.0, "nothing written yet");

    // Four whole blocks of data, made durable.
    let data: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8 | 1).collect();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(mount.file()).unwrap();
    file.write_all_at(&data, 0).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let after = scrape(port);
    assert!(uploads(&after) >= 4.0, "{after}");
    assert!(puts(&after) >= puts(&before) + 4.0, "{after}");
    let sent = value(&after, "s3block_sent_bytes_total", &[]);
    assert!(sent >= value(&before, "s3block_sent_bytes_total", &[]) + 4.0 * 65_536.0, "{after}");
    assert_eq!(value(&after, "s3block_dirty_bytes", &[r#"tier="memory""#]), 0.0, "fsync stored it all");
    let timed = value(&after, "s3block_request_duration_seconds_count", &[r#"method="PUT""#]);
    assert!(timed >= 4.0, "{after}");
    assert!(value(&after, "s3block_request_cost_dollars", &[]) > 0.0, "{after}");
    // The same numbers as the stats file.
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(mount.path().join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["requests"]["block_uploads"].as_f64(), Some(uploads(&scrape(port))));

    let (status, body) = get(port, "/stats");
    assert_eq!(status, 404, "{body}");
    let log = mount.unmount();
    assert!(log.contains(&format!("metrics at http://{addr}/metrics")), "{log}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the port is let go at exit");
}

#[test]
fn the_nbd_server_serves_metrics_and_a_taken_port_fails_the_start() {
    let store = Store::local();
    let port = free_port();
    let server = Server::start(&store, &["--size=1M", "--metrics", &port.to_string()]);
    let body = scrape(port);
    assert_eq!(value(&body, "s3block_lock_held", &[r#"store="file""#]), 1.0);
    assert_eq!(value(&body, "s3block_dirty_bytes", &[r#"tier="memory""#]), 0.0);
    assert_eq!(get(port, "/").0, 404);

    // The port is taken now: a second server fails before opening the
    // volume (its lock would refuse it too, later), naming the address.
    let other = Store::local();
    let (status, log) =
        match Server::try_start(&other, &["--size=1M", &format!("--metrics=127.0.0.1:{port}")]) {
            Ok(_) => panic!("a second server started on a taken metrics port"),
            Err(failed) => failed,
        };
    assert!(!status.success());
    assert!(log.contains(&format!("--metrics 127.0.0.1:{port}: cannot listen")), "{log}");
    drop(server);

    // A bad value is refused naming the option and the value.
    let out = output(NBD, &["--metrics", "localhost:x", "--size=1M", "memory://"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--metrics") && stderr.contains("localhost:x"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
