//! `--ca-cert` (s3backer's `--cacert`) and `--insecure` decide whether an
//! https:// endpoint with a certificate of its own CA is trusted: an
//! `openssl s_server` on loopback with a fresh self-signed certificate.
//! Without either option the handshake fails on the certificate; with
//! either one the request reaches the server (which answers with its
//! status page, not S3, so the request fails after the handshake).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use object_store::GetOptions;
use object_store::path::Path as ObjectPath;
use s3block_store::{RetryConfig, StoreArgs};
use s3block_testkit::in_ci;
use s3block_testkit::kernel::on_path;

/// The store options as the programs parse them.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    store: StoreArgs,
}

/// An `openssl s_server` killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `openssl` with `args` in `dir`, quietly.
fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA (ca.pem) and a certificate for 127.0.0.1 it signed, in `dir`,
/// and a TLS server with the latter; its https:// endpoint.
fn tls_server(dir: &Path) -> (Server, String) {
    let key = ["-newkey", "rsa:2048", "-nodes"];
    openssl(
        dir,
        &[
            &[
                "req",
                "-x509",
                "-days",
                "1",
                "-subj",
                "/CN=s3block test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ][..],
            &key[..],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[&["req", "-subj", "/CN=127.0.0.1", "-keyout", "key.pem", "-out", "leaf.csr"][..], &key[..]]
            .concat(),
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
        ]
        .into_iter()
        .chain(["-extfile", "leaf.ext", "-out", "cert.pem"])
        .collect::<Vec<_>>(),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(dir.join("cert.pem"))
        .arg("-key")
        .arg(dir.join("key.pem"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, format!("https://127.0.0.1:{port}"))
}

/// The error of one GET through the store options `args`.
async fn get_error(endpoint: &str, args: &[&str]) -> String {
    let mut argv = vec!["prog".to_owned(), format!("--endpoint={endpoint}")];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let store = Cli::try_parse_from(argv).unwrap().store;
    store.check().unwrap();
    let env: HashMap<String, String> = [("AWS_ACCESS_KEY_ID", "id"), ("AWS_SECRET_ACCESS_KEY", "secret")]
        .map(|(k, v)| (k.into(), v.into()))
        .into();
    let opened = store.to_config("s3://bucket").retry(RetryConfig::none()).env(env).open().unwrap();
    let err = opened.store.get_opts(&ObjectPath::from("b/0"), GetOptions::default()).await.unwrap_err();
    format!("{err:?}")
}

#[tokio::test]
async fn ca_cert_and_insecure_decide_whether_the_endpoint_is_trusted() {
    if !on_path("openssl") {
        assert!(!in_ci(), "CI=true and openssl is not installed (the TLS server of this test)");
        eprintln!("SKIPPED: openssl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_server, endpoint) = tls_server(dir.path());
    let is_certificate_error =
        |e: &str| e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer");

    let untrusted = get_error(&endpoint, &[]).await;
    assert!(is_certificate_error(&untrusted), "without --ca-cert: {untrusted}");
    let cert = dir.path().join("ca.pem");
    let trusted = get_error(&endpoint, &[&format!("--cacert={}", cert.display())]).await;
    assert!(!is_certificate_error(&trusted), "with --cacert the handshake passes: {trusted}");
    let insecure = get_error(&endpoint, &["--insecure-tls"]).await;
    assert!(!is_certificate_error(&insecure), "with --insecure-tls the handshake passes: {insecure}");

    // A file without a certificate is refused when the store opens, naming it.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let args = Cli::try_parse_from([
        "prog",
        &format!("--endpoint={endpoint}"),
        &format!("--ca-cert={}", empty.display()),
    ])
    .unwrap()
    .store;
    let err = args.to_config("s3://bucket").open().unwrap_err().to_string();
    assert!(err.contains("CA certificate file") && err.contains("empty.pem"), "{err}");
}
