//! Stopping and starting `s3block-nbd` as a service would: SIGTERM while a
//! client writes (every write acknowledged, and every byte flushed, is
//! there when a new server starts), a second server on a live socket, TCP
//! on loopback, and a public address without TLS refused.

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

mod nbd_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use nbd_support::{NBD, Server, Store, output, run, tools};

const MIB: usize = 1 << 20;

#[test]
fn sigterm_with_writes_in_flight_loses_nothing_acknowledged() {
    if !tools(&["qemu-io", "nbdcopy"]) {
        return;
    }
    for store in Store::local_and_garage("nbd_sigterm") {
        let args = ["--size=256M", "--block-size=64K", "--cache-size=8M", "--upload-concurrency=2"];
        let server = Server::start(&store, &args);
        let uri = server.uri();
        // 16 MiB written and flushed first.
        run("qemu-io", &["-f", "raw", "-c", "write -P 0x5a 0 16M", "-c", "flush", &uri]);
        // Then 1 MiB writes one after the other, from 16 MiB on, while the server stops.
        let mut writer = Command::new("qemu-io");
        writer.args(["-f", "raw"]);
        for n in 16..256 {
            writer.args(["-c", &format!("write -P 0xc3 {n}M 1M")]);
        }
        let writer = writer.arg(&uri).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // Stop once some of those writes are stored (so some are acknowledged
        // and more are coming), however slow the machine.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !store.stored_blocks().iter().any(|&b| b >= 16 * 16) {
            assert!(std::time::Instant::now() < deadline, "no write reached the store:\n{}", server.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        let log = server.stop();
        let out = writer.wait_with_output().unwrap();
        let acknowledged = String::from_utf8_lossy(&out.stdout).matches("wrote 1048576/1048576").count();
        assert!(
            (1..240).contains(&acknowledged),
            "{}: the writer should have been stopped midway ({acknowledged} writes acknowledged):\n{log}",
            store.kind()
        );
        assert!(log.contains("SIGTERM: no new connections"), "{log}");
        eprintln!("{}: SIGTERM after {acknowledged} acknowledged writes of 1 MiB", store.kind());

        // A new server returns the flushed 16 MiB, then every acknowledged
        // write, in order, then zeros: nothing torn, nothing lost.
        let again = Server::start(&store, &["--read-only"]);
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image");
        run("nbdcopy", &[&again.uri(), image.to_str().unwrap()]);
        let bytes = std::fs::read(&image).unwrap();
        assert!(bytes[..16 * MIB].iter().all(|&b| b == 0x5a), "{}: the flushed data changed", store.kind());
        let written = bytes[16 * MIB..].chunks(MIB).take_while(|c| c.iter().all(|&b| b == 0xc3)).count();
        let rest = &bytes[(16 + written) * MIB..];
        assert!(
            rest.iter().all(|&b| b == 0),
            "{}: after {written} whole writes, the volume holds neither the writer's bytes nor zeros",
            store.kind()
        );
        assert!(
            written >= acknowledged,
            "{}: {acknowledged} writes were acknowledged, {written} are stored",
            store.kind()
        );
        again.stop();
    }
}

#[test]
fn a_second_server_on_a_live_socket_is_refused_and_the_lock_too() {
    let store = Store::local();
    let first = Server::start(&store, &["--size=16M"]);
    // The same socket: refused before the volume is opened.
    let out = Command::new(NBD)
        .arg(format!("--socket={}", first.socket().display()))
        .arg(&store.url)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("another server is listening"), "{err}");
    assert!(first.socket().exists());
    // Another socket, the same volume: its lock refuses it.
    let err = match Server::try_start(&store, &[]) {
        Ok(_) => panic!("a second server of a locked volume started"),
        Err((status, log)) => {
            assert_eq!(status.code(), Some(4), "{log}");
            log
        }
    };
    assert!(err.contains("already mounted by"), "{err}");
    first.stop();
    // The lock was released last: the volume serves again.
    Server::start(&store, &[]).stop();
}

#[test]
fn tcp_serves_on_loopback_and_a_public_address_needs_tls() {
    let out = Command::new(NBD).args(["--listen=0.0.0.0:10809", "--size=1M", "memory://"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("without TLS") && err.contains("--tls-cert") && err.contains("--insecure"), "{err}");

    if !tools(&["nbdinfo"]) {
        return;
    }
    let (mut child, port, log) = start_tcp(&["--listen=127.0.0.1:0", "--size=8M", "memory://"]);
    let info = run("nbdinfo", &["--size", &format!("nbd://127.0.0.1:{port}")]);
    assert_eq!(info.trim(), (8 << 20).to_string());
    run("kill", &["-TERM", &child.id().to_string()]);
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(log.path()).unwrap());
}

#[test]
fn tls_makes_a_public_address_safe_and_is_required() {
    if !tools(&["nbdinfo"]) {
        return;
    }
    // The NBD library's test certificate for localhost, signed by its test CA.
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../s3block-nbd/tests/data");
    let (cert, key) = (data.join("server.pem"), data.join("server.key"));
    let (cert_arg, key_arg) = (cert.to_str().unwrap(), key.to_str().unwrap());
    // libnbd trusts the ca-cert.pem of the directory it is given.
    let certs = tempfile::tempdir().unwrap();
    std::fs::copy(data.join("ca.pem"), certs.path().join("ca-cert.pem")).unwrap();
    let (mut child, port, log) = start_tcp(&[
        "--listen=0.0.0.0:0",
        &format!("--tls-cert={cert_arg}"),
        &format!("--tls-key={key_arg}"),
        "--size=8M",
        "memory://",
    ]);
    let uri = format!("nbds://localhost:{port}/?tls-certificates={}", certs.path().display());
    assert_eq!(run("nbdinfo", &["--size", &uri]).trim(), (8 << 20).to_string());
    // Without TLS the server refuses to go on.
    let plain = output("nbdinfo", &["--size", &format!("nbd://localhost:{port}/")]);
    assert!(!plain.status.success(), "a client without TLS was served");
    assert!(
        String::from_utf8_lossy(&plain.stderr).contains("TLS"),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    run("kill", &["-TERM", &child.id().to_string()]);
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(log.path()).unwrap());
}

/// Starts s3block-nbd with `args` (a `--listen` with port 0 among them);
/// returns it, the port it listens on (from its log) and the log file.
fn start_tcp(args: &[&str]) -> (std::process::Child, u16, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(NBD)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        let port = text.split("on TCP ").nth(1).and_then(|rest| rest.split(':').nth(1)?.parse().ok());
        if let Some(port) = port {
            return (child, port, log);
        }
        assert!(child.try_wait().unwrap().is_none(), "s3block-nbd exited:\n{text}");
        assert!(std::time::Instant::now() < deadline, "not serving after 30 s:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_client_that_never_reads_its_replies_does_not_hold_up_the_stop() {
    use std::io::{Read, Write};
    let store = Store::local();
    let server = Server::start(&store, &["--size=64M", "--drain-timeout=2"]);
    let mut client = std::os::unix::net::UnixStream::connect(server.socket()).unwrap();
    // Fixed newstyle handshake: greeting, client flags, NBD_OPT_EXPORT_NAME "".
    let mut greeting = [0u8; 18];
    client.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting[..8], b"NBDMAGIC");
    client.write_all(&3u32.to_be_bytes()).unwrap(); // FIXED_NEWSTYLE | NO_ZEROES
    client.write_all(&greeting[8..16]).unwrap(); // IHAVEOPT
    client.write_all(&1u32.to_be_bytes()).unwrap(); // NBD_OPT_EXPORT_NAME
    client.write_all(&0u32.to_be_bytes()).unwrap();
    let mut export = [0u8; 10];
    client.read_exact(&mut export).unwrap();
    assert_eq!(u64::from_be_bytes(export[..8].try_into().unwrap()), 64 << 20);
    // 100 reads of 1 MiB, none of whose replies is ever read.
    for n in 0..100u64 {
        let mut request = Vec::with_capacity(28);
        request.extend_from_slice(&0x2560_9513u32.to_be_bytes());
        request.extend_from_slice(&0u16.to_be_bytes()); // flags
        request.extend_from_slice(&0u16.to_be_bytes()); // NBD_CMD_READ
        request.extend_from_slice(&n.to_be_bytes()); // handle
        request.extend_from_slice(&((n % 64) << 20).to_be_bytes());
        request.extend_from_slice(&(1u32 << 20).to_be_bytes());
        client.write_all(&request).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let log = server.stop();
    assert!(started.elapsed() < Duration::from_secs(20), "the stop waited {:?}:\n{log}", started.elapsed());
    assert!(log.contains("still unanswered after 2s"), "{log}");
    drop(client);
}
