//! Temporary credentials sign the requests to Garage: the EC2 instance
//! role (`--instance-credentials`, s3backer's `--accessEC2IAM`) through
//! IMDSv2 and, refused tokens, IMDSv1 (not with `--imdsv2-only`); EKS Pod
//! Identity from the environment. A fake credentials server on loopback
//! hands out Garage's key as the role's; it records what it is asked.
//! Without a key or a provider, requests go unsigned and Garage refuses
//! the write.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Parser;
use s3block_core::BlockDeviceExt;
use s3block_store::{Create, StoreArgs, Volume};
use s3block_testkit::{S3Env, s3_env, unique_prefix};

/// A request the fake server saw: method, path, headers (names lowercased).
type Seen = Arc<Mutex<Vec<(String, String, HashMap<String, String>)>>>;

const ROLE: &str = "s3block-role";
const IMDS_TOKEN: &str = "imds-token-1";

/// A credentials server: the instance metadata service's paths (refusing
/// session tokens with 403 when `tokens` is false) and `/eks` for EKS Pod
/// Identity. Every answer carries `env`'s key. Its URL and its record.
fn credentials_server(env: &S3Env, tokens: bool) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let creds = format!(
        r#"{{"Code":"Success","AccessKeyId":"{}","SecretAccessKey":"{}","Token":"session-token","Expiration":"2099-01-01T00:00:00Z"}}"#,
        env.access_key_id, env.secret_access_key
    );
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut first = String::new();
            reader.read_line(&mut first).unwrap();
            let mut parts = first.split_whitespace();
            let (method, path) =
                (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
            let mut headers = HashMap::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            reader.read_exact(&mut vec![0; length]).unwrap();
            record.lock().unwrap().push((method.clone(), path.clone(), headers));
            let (status, body) = match (method.as_str(), path.as_str()) {
                ("PUT", "/latest/api/token") if tokens => ("200 OK", IMDS_TOKEN.to_owned()),
                ("PUT", "/latest/api/token") => ("403 Forbidden", String::new()),
                ("GET", "/latest/meta-data/iam/security-credentials/") => ("200 OK", ROLE.to_owned()),
                ("GET", p) if p == format!("/latest/meta-data/iam/security-credentials/{ROLE}") => {
                    ("200 OK", creds.clone())
                }
                ("GET", "/eks") => ("200 OK", creds.clone()),
                _ => ("404 Not Found", String::new()),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

/// The store options as the programs parse them.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    store: StoreArgs,
}

/// Creates a volume on Garage with `options` and the environment `vars`
/// (no key among them, HOME an empty directory), writes a block and reads
/// it back; the error of the first step that fails.
async fn write_block(
    env: &S3Env,
    options: &[&str],
    vars: &[(&str, String)],
    name: &str,
) -> Result<(), String> {
    let home = tempfile::tempdir().unwrap();
    let mut argv =
        vec!["prog".to_owned(), format!("--endpoint={}", env.endpoint), "--force-path-style".to_owned()];
    argv.extend(options.iter().map(|o| (*o).to_owned()));
    let args = Cli::try_parse_from(argv).unwrap().store;
    args.check().unwrap();
    let mut environment: HashMap<String, String> =
        vars.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    environment.insert("HOME".into(), home.path().display().to_string());
    environment.insert("AWS_REGION".into(), env.region.clone());
    let url = format!("s3://{}/{}", env.bucket, unique_prefix(name));
    let opened = args.to_config(&url).env(environment).open().map_err(|e| e.to_string())?;
    let volume = Volume::builder(opened)
        .size(1 << 20)
        .block_size(4096)
        .create(Create::New)
        .open()
        .await
        .map_err(|e| e.to_string())?;
    let data = Bytes::from(vec![0x3Cu8; 4096]);
    volume.device().write_at(4096, data.clone()).await.map_err(|e| e.to_string())?;
    assert_eq!(volume.device().read_at(4096, 4096).await.unwrap(), data);
    volume.close().await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_role_signs_through_imdsv2() {
    let Some(env) = s3_env() else { return };
    let (url, seen) = credentials_server(&env, true);
    let vars = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", url)];
    write_block(&env, &[&format!("--accessEC2IAM={ROLE}"), "--accessEC2IAM-IMDSv2"], &vars, "imdsv2")
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().any(|(m, p, _)| m == "PUT" && p == "/latest/api/token"),
        "no session token asked: {seen:?}"
    );
    let gets: Vec<_> = seen.iter().filter(|(m, _, _)| m == "GET").collect();
    assert!(
        gets.iter().any(|(_, p, _)| p.ends_with(ROLE)),
        "the role's credentials were not fetched: {seen:?}"
    );
    for (_, path, headers) in gets {
        assert_eq!(
            headers.get("x-aws-ec2-metadata-token").map(String::as_str),
            Some(IMDS_TOKEN),
            "GET {path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_session_tokens_fall_back_to_imdsv1_unless_imdsv2_only() {
    let Some(env) = s3_env() else { return };
    let (url, seen) = credentials_server(&env, false);
    let vars = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", url)];
    write_block(&env, &["--instance-credentials"], &vars, "imdsv1").await.unwrap();
    {
        let seen = seen.lock().unwrap();
        let role =
            seen.iter().find(|(m, p, _)| m == "GET" && p.ends_with(ROLE)).expect("credentials fetched");
        assert!(!role.2.contains_key("x-aws-ec2-metadata-token"), "IMDSv1 has no token: {role:?}");
    }
    let err = write_block(&env, &["--instance-credentials", "--imdsv2-only"], &vars, "imdsv2only")
        .await
        .unwrap_err();
    assert!(err.contains("access denied") && err.contains("instance metadata service (IMDSv2)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eks_pod_identity_from_the_environment_signs() {
    let Some(env) = s3_env() else { return };
    let (url, seen) = credentials_server(&env, true);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "pod-token-7").unwrap();
    let vars = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{url}/eks")),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file.display().to_string()),
    ];
    write_block(&env, &[], &vars, "eks").await.unwrap();
    let seen = seen.lock().unwrap();
    let eks = seen.iter().find(|(_, p, _)| p == "/eks").expect("the EKS endpoint was asked");
    assert_eq!(eks.2.get("authorization").map(String::as_str), Some("pod-token-7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_or_a_provider_requests_are_unsigned_and_writes_refused() {
    let Some(env) = s3_env() else { return };
    let (url, seen) = credentials_server(&env, true);
    // The metadata endpoint is set, but the instance role was not asked for.
    let vars = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", url)];
    let err = write_block(&env, &[], &vars, "unsigned").await.unwrap_err();
    assert!(err.contains("access denied"), "{err}");
    assert!(seen.lock().unwrap().is_empty(), "the metadata service was asked unasked");
    // s3backer's empty --accessId: unsigned even with a key in the environment.
    let key = [
        ("AWS_ACCESS_KEY_ID", env.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", env.secret_access_key.clone()),
    ];
    write_block(&env, &[], &key, "signed").await.unwrap();
    let err = write_block(&env, &["--accessId="], &key, "empty_id").await.unwrap_err();
    assert!(err.contains("access denied"), "{err}");
}
