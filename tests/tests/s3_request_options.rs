//! The S3 request options reach the requests: `--sse`, `--sse-key-id`,
//! `--storage-class` and `--access-type` put their headers on the PUTs of
//! blocks, and only there (reads, listings and deletes carry none of them).
//!
//! A recording proxy in front of Garage keeps every byte the client sends;
//! the requests are read back from it, header by header.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Parser;
use s3block_core::BlockDeviceExt;
use s3block_store::{Create, StoreArgs, Volume};
use s3block_testkit::{S3Env, s3_env, unique_prefix};

/// What the client sent on each connection, in order.
type Sent = Arc<Mutex<Vec<Vec<u8>>>>;

/// A TCP proxy to `upstream` (`http://host:port`) that records what the
/// client sends; its endpoint URL and the record.
fn recording_proxy(upstream: &str) -> (String, Sent) {
    let target = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let sent: Sent = Arc::default();
    let record = sent.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let server = TcpStream::connect(&target).unwrap();
            let index = {
                let mut all = record.lock().unwrap();
                all.push(Vec::new());
                all.len() - 1
            };
            let (mut from_client, mut to_server) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let record = record.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 64 << 10];
                while let Ok(n) = from_client.read(&mut buf) {
                    if n == 0 || to_server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    record.lock().unwrap()[index].extend_from_slice(&buf[..n]);
                }
                let _ = to_server.shutdown(std::net::Shutdown::Write);
            });
            let (mut from_server, mut to_client) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_server, &mut to_client);
                let _ = to_client.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (endpoint, sent)
}

/// One request as sent: its method, path and headers (names lowercased).
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

/// The requests in one connection's bytes, bodies skipped by Content-Length.
fn requests(bytes: &[u8]) -> Vec<Request> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let (method, path) = (first.next().unwrap_or_default(), first.next().unwrap_or_default());
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let body: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        out.push(Request { method: method.to_owned(), path: path.to_owned(), headers });
        rest = &rest[(end + 4 + body).min(rest.len())..];
    }
    out
}

/// The store options as the programs parse them.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    store: StoreArgs,
}

/// Creates a volume through the proxy with `options`, writes block 3 and
/// reads it back; the requests sent.
async fn write_through_proxy(env: &S3Env, options: &[&str], name: &str) -> Vec<Request> {
    let (endpoint, sent) = recording_proxy(&env.endpoint);
    let mut argv = vec!["prog".to_owned(), format!("--endpoint={endpoint}"), "--force-path-style".to_owned()];
    argv.extend(options.iter().map(|o| (*o).to_owned()));
    let args = Cli::try_parse_from(argv).unwrap().store;
    args.check().unwrap();
    let url = format!("s3://{}/{}", env.bucket, unique_prefix(name));
    let credentials = HashMap::from([
        ("AWS_ACCESS_KEY_ID".to_owned(), env.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), env.secret_access_key.clone()),
        ("AWS_REGION".to_owned(), env.region.clone()),
    ]);
    let opened = args.to_config(&url).env(credentials).open().unwrap();
    let volume =
        Volume::builder(opened).size(1 << 20).block_size(4096).create(Create::New).open().await.unwrap();
    let data = Bytes::from(vec![0xA5u8; 4096]);
    volume.device().write_at(3 * 4096, data.clone()).await.unwrap();
    assert_eq!(volume.device().read_at(3 * 4096, 4096).await.unwrap(), data);
    volume.close().await.unwrap();
    let all = sent.lock().unwrap();
    all.iter().flat_map(|c| requests(c)).collect()
}

const WRITE_HEADERS: [&str; 2] = ["x-amz-storage-class", "x-amz-acl"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_storage_class_and_acl_headers_go_on_block_puts_only() {
    let Some(env) = s3_env() else { return };
    let sent = write_through_proxy(
        &env,
        &["--sse=AES256", "--storageClass=STANDARD_IA", "--accessType=private"],
        "sse_storage_class_acl",
    )
    .await;
    let block_put = sent
        .iter()
        .find(|r| r.method == "PUT" && r.path.ends_with("/00000003"))
        .unwrap_or_else(|| panic!("no PUT of block 3 among {sent:#?}"));
    let header = |name: &str| block_put.headers.get(name).map(String::as_str);
    assert_eq!(header("x-amz-server-side-encryption"), Some("AES256"), "{block_put:#?}");
    assert_eq!(header("x-amz-storage-class"), Some("STANDARD_IA"), "{block_put:#?}");
    assert_eq!(header("x-amz-acl"), Some("private"), "{block_put:#?}");
    // Signed, as S3 wants every x-amz- header.
    let auth = header("authorization").unwrap_or_default();
    for name in ["x-amz-server-side-encryption", "x-amz-storage-class", "x-amz-acl"] {
        assert!(auth.contains(name), "{name} is not signed: {auth}");
    }
    let reads: Vec<&Request> = sent.iter().filter(|r| r.method != "PUT").collect();
    assert!(reads.iter().any(|r| r.method == "GET"), "no GET recorded: {sent:#?}");
    for r in reads {
        for name in WRITE_HEADERS.iter().chain(&["x-amz-server-side-encryption"]) {
            assert!(!r.headers.contains_key(*name), "{} {} carries {name}", r.method, r.path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_key_id_goes_with_aws_kms() {
    let Some(env) = s3_env() else { return };
    let sent =
        write_through_proxy(&env, &["--sse=aws:kms", "--sse-key-id=alias/s3block-test"], "sse_kms").await;
    let puts: Vec<&Request> = sent.iter().filter(|r| r.method == "PUT").collect();
    assert!(puts.iter().any(|r| r.path.ends_with("/00000003")), "no PUT of block 3: {sent:#?}");
    for put in puts {
        assert_eq!(put.headers.get("x-amz-server-side-encryption").map(String::as_str), Some("aws:kms"));
        assert_eq!(
            put.headers.get("x-amz-server-side-encryption-aws-kms-key-id").map(String::as_str),
            Some("alias/s3block-test")
        );
        for name in WRITE_HEADERS {
            assert!(!put.headers.contains_key(name), "{name} without its option: {put:#?}");
        }
    }
}
