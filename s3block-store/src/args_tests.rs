//! Tests of `args`.

use super::*;
use clap::Parser;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    store: StoreArgs,
}

fn parse(args: &[&str]) -> StoreArgs {
    let mut full = vec!["prog"];
    full.extend_from_slice(args);
    Cli::try_parse_from(full).expect("valid arguments").store
}

#[test]
fn long_names_and_s3backer_aliases() {
    let a = parse(&[
        "--baseURL=http://127.0.0.1:3900/",
        "--accessFile",
        "/etc/s3.crd",
        "--region=garage",
        "--prefix=vol-",
        "--force-path-style",
    ]);
    assert_eq!(a.endpoint.as_deref(), Some("http://127.0.0.1:3900/"));
    assert_eq!(a.access_file, Some(PathBuf::from("/etc/s3.crd")));
    assert_eq!(a.region.as_deref(), Some("garage"));
    assert_eq!(a.prefix.as_deref(), Some("vol-"));
    assert!(a.force_path_style);
    let b = parse(&["--endpoint", "http://e", "--access-file=/k"]);
    assert_eq!(b.endpoint.as_deref(), Some("http://e"));
    assert_eq!(b.access_file, Some(PathBuf::from("/k")));
    assert!(!b.force_path_style);
}

#[test]
fn encryption_flags() {
    let a = parse(&["--encrypt", "--passwordFile=/etc/pw"]);
    assert_eq!(a.encrypt, Some(None));
    assert_eq!(a.password_file, Some(PathBuf::from("/etc/pw")));
    assert_eq!(parse(&["--encrypt=aes-128-cbc"]).encrypt, Some(Some(EncryptionScheme::Aes128Cbc)));
    assert_eq!(
        parse(&["--encrypt=xchacha20poly1305"]).encrypt,
        Some(Some(EncryptionScheme::XChaCha20Poly1305))
    );
    assert_eq!(parse(&[]).encrypt, None);
    let err = Cli::try_parse_from(["prog", "--encrypt=rot13"]).unwrap_err().to_string();
    assert!(err.contains("rot13") && err.contains("aes-128-cbc"), "{err}");
    // A password on the command line is refused, and not repeated.
    for args in [&["prog", "--password=hunter2"][..], &["prog", "--password", "hunter2"]] {
        let err = Cli::try_parse_from(args).unwrap_err().to_string();
        assert!(err.contains("--password-file") && err.contains("S3BLOCK_PASSWORD"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[test]
fn s3_request_options_and_their_errors() {
    let a = parse(&[
        "--sse=aws:kms",
        "--sse-key-id=alias/k",
        "--storageClass=STANDARD_IA",
        "--accessType=private",
    ]);
    a.check().expect("valid");
    let s3 = a.s3_options().expect("valid");
    assert_eq!(s3.sse, Some(ServerSideEncryption::Kms { key_id: Some("alias/k".into()) }));
    assert_eq!(s3.storage_class.as_deref(), Some("STANDARD_IA"));
    assert_eq!(s3.acl.as_deref(), Some("private"));
    let b = parse(&[
        "--sse",
        "AES256",
        "--storage-class",
        "INTELLIGENT_TIERING",
        "--access-type",
        "bucket-owner-full-control",
    ]);
    assert_eq!(b.s3_options().expect("valid").sse, Some(ServerSideEncryption::Aes256));
    assert_eq!(parse(&[]).s3_options().expect("none"), S3Options::default());
    let err = parse(&["--sse=AES256", "--sse-key-id=k"]).check().unwrap_err();
    assert!(err.contains("--sse") && err.contains("--sse-key-id") && err.contains("aws:kms"), "{err}");
    for (args, names) in [
        (&["prog", "--sse=AES128"][..], &["--sse", "AES256", "aws:kms"][..]),
        (&["prog", "--sse-key-id=k"], &["--sse"]),
        (&["prog", "--storageClass=GLACIER"], &["--storage-class", "restore", "STANDARD_IA"]),
        (&["prog", "--storage-class=cheap"], &["--storage-class", "cheap"]),
        (&["prog", "--accessType=everyone"], &["--access-type", "public-read"]),
    ] {
        let err = Cli::try_parse_from(args).unwrap_err().to_string();
        for name in names {
            assert!(err.contains(name), "{args:?}: {err}");
        }
    }
}

#[test]
fn list_threads_set_the_listing_parallelism() {
    let opened = parse(&["--listBlocksThreads=3"]).to_config("memory://").open().expect("opens");
    assert_eq!(opened.list_plan.parallelism, 3);
    assert_eq!(StoreArgs::default().to_config("memory://").open().expect("opens").list_plan.parallelism, 8);
    let err = Cli::try_parse_from(["prog", "--list-threads=0"]).unwrap_err().to_string();
    assert!(err.contains("--list-threads"), "{err}");
}

#[test]
fn vhost_and_no_vhost() {
    assert!(parse(&["--vhost"]).vhost);
    assert!(parse(&["--no-vhost"]).force_path_style);
    let err = Cli::try_parse_from(["prog", "--vhost", "--no-vhost"]).unwrap_err().to_string();
    assert!(err.contains("--vhost") && err.contains("--force-path-style"), "{err}");
}

#[test]
fn credential_options() {
    // --access-key-env names a variable holding the secret (cargo sets this one for tests).
    let a = parse(&["--accessId=AKID", "--accessKeyEnv=CARGO_PKG_NAME"]);
    a.check().expect("the variable is set");
    let c = a.to_config("s3://b").env(Default::default()).resolve_credentials().expect("ok").expect("some");
    assert_eq!((c.access_key_id.as_str(), c.secret_access_key.as_str()), ("AKID", "s3block-store"));
    let err = parse(&["--access-id=A", "--access-key-env=S3BLOCK_TEST_SURELY_UNSET"]).check().unwrap_err();
    assert!(err.contains("--access-key-env S3BLOCK_TEST_SURELY_UNSET") && err.contains("not set"), "{err}");
    // An empty id: no credentials, even with a key in the environment.
    let env = [("AWS_ACCESS_KEY_ID", "E"), ("AWS_SECRET_ACCESS_KEY", "S")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    let none = parse(&["--accessId="]).to_config("s3://b").env(env).resolve_credentials().expect("ok");
    assert!(none.is_none());
    let i = parse(&["--accessEC2IAM=role", "--accessEC2IAM-IMDSv2"]);
    assert_eq!((i.instance_credentials, i.imdsv2_only), (Some(Some("role".into())), true));
    assert_eq!(parse(&["--instance-credentials"]).instance_credentials, Some(None));
    for (args, names) in [
        (&["prog", "--accessKey=TOPSECRET"][..], &["--accessKey is refused", "--access-file"][..]),
        (&["prog", "--access-key", "TOPSECRET"], &["--accessKey is refused", "AWS_SECRET_ACCESS_KEY"]),
        (&["prog", "--accessKeyEnv=V"], &["--access-id"]),
        (&["prog", "--accessEC2IAM-IMDSv2"], &["--instance-credentials"]),
        (&["prog", "--accessEC2IAM=r", "--accessId=A"], &["--instance-credentials", "--access-id"]),
    ] {
        let err = Cli::try_parse_from(args).unwrap_err().to_string();
        assert!(!err.contains("TOPSECRET"), "{err}");
        for name in names {
            assert!(err.contains(name), "{args:?}: {err}");
        }
    }
}

#[tokio::test]
async fn passwords_come_from_the_file_and_encryption_from_the_descriptor() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "sesame\n").expect("write");
    let opened = StoreArgs::default().to_config("memory://").open().expect("memory store opens");
    let mut never = |_: &str| -> std::io::Result<String> { panic!("no prompt expected") };
    // Not encrypted, no flag: no password needed.
    assert!(StoreArgs::default().open_encryption(&opened, "v", &mut never).await.expect("open").is_none());
    let args = StoreArgs { encrypt: Some(None), password_file: Some(pw.clone()), ..Default::default() };
    let mut enc = args.create_encryption(&opened, "v", &mut never).expect("create").expect("encrypted");
    assert_eq!(enc.password.as_bytes(), b"sesame");
    assert_eq!(enc.scheme, None);
    assert_eq!(enc.bucket, "memory");
    enc.kdf = Some(crate::KdfParams::with_cost(64, 1, 1));
    let opts = crate::VolumeOptions { size: Some(1 << 20), ..Default::default() };
    crate::create_volume_with(opened.store.as_ref(), &opened.prefix, &opts, Some(&enc))
        .await
        .expect("create");
    // The descriptor says encrypted: the password is read without --encrypt.
    let plain = StoreArgs { password_file: Some(pw), ..Default::default() };
    assert!(plain.needs_password(&opened).await.expect("descriptor"));
    let again = plain.open_encryption(&opened, "v", &mut never).await.expect("open").expect("encrypted");
    assert_eq!(again.password.as_bytes(), b"sesame");
    let local = StoreKind::Local(PathBuf::from("/srv/vol1"));
    assert_eq!(StoreArgs::bucket_name(&local), "vol1");
}

#[test]
fn prefix_is_appended_to_the_urls() {
    let a = StoreArgs { prefix: Some("p-".into()), ..Default::default() };
    assert_eq!(a.key_prefix("s3://bucket/vol").as_deref(), Some("vol/p-"));
    assert_eq!(a.key_prefix("s3://bucket/vol/").as_deref(), Some("vol/p-"));
    assert_eq!(a.key_prefix("s3://bucket").as_deref(), Some("p-"));
    assert_eq!(a.key_prefix("file:///srv/vol").as_deref(), Some("p-"));
    assert_eq!(StoreArgs::default().key_prefix("s3://bucket/vol"), None);
}

#[test]
fn config_opens_with_the_combined_prefix() {
    let a = StoreArgs { prefix: Some("p-".into()), ..Default::default() };
    let opened = a.to_config("memory:///vol").open().expect("memory store opens");
    assert_eq!(opened.prefix, "vol/p-");
    let opened = StoreArgs::default().to_config("memory:///vol").open().expect("memory store opens");
    assert_eq!(opened.prefix, "vol/");
}

#[test]
fn options_reach_the_config() {
    let a = StoreArgs {
        endpoint: Some("http://127.0.0.1:1".into()),
        region: Some("garage".into()),
        ..Default::default()
    };
    let c = a.to_config("s3://b");
    assert_eq!(c.resolved_endpoint().as_deref(), Some("http://127.0.0.1:1"));
    assert_eq!(c.resolved_region(), "garage");
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("none");
    let a = StoreArgs { access_file: Some(missing.clone()), ..Default::default() };
    let err = a.to_config("s3://b").env(Default::default()).resolve_credentials().unwrap_err();
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
}
