//! Tests of `config`.

use super::{StoreConfig, signs_payload};

fn open_err(url: &str) -> String {
    StoreConfig::new(url).open().expect_err(url).to_string()
}

#[test]
fn a_file_url_must_name_a_directory_whose_parent_exists() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("disk.img");
    std::fs::write(&file, b"x").expect("write");
    let err = open_err(&format!("file://{}", file.display()));
    assert!(err.contains("is a file, not a directory") && err.contains("disk.img"), "{err}");

    let deep = dir.path().join("typo/vols/a");
    let err = open_err(&format!("file://{}", deep.display()));
    assert!(err.contains("does not exist") && err.contains("typo/vols"), "{err}");
    assert!(!dir.path().join("typo").exists(), "no directory tree is made for a mistyped path");

    let new = dir.path().join("vol");
    StoreConfig::new(format!("file://{}", new.display())).open().expect("a new directory in an existing one");
    assert!(new.is_dir());
}

#[test]
fn access_files_are_named_and_checked() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope");
    let err = StoreConfig::new("s3://b")
        .env(Default::default())
        .access_file(&missing)
        .resolve_credentials()
        .expect_err("missing");
    assert!(err.to_string().starts_with("access file ") && err.to_string().contains("nope"), "{err}");

    let file = dir.path().join("passwd");
    std::fs::write(&file, "id:secret\n").expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let warning = super::access_file_warning(&file).expect("world-readable");
    assert!(warning.contains("644") && warning.contains("chmod 600"), "{warning}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_eq!(super::access_file_warning(&file), None);

    let home = StoreConfig::new("s3://b").env([("HOME".to_owned(), dir.path().display().to_string())].into());
    assert!(home.resolve_credentials().expect("no credentials is not an error").is_none());
    let none = home.describe_credentials(None);
    assert!(none.starts_with("no credentials found, tried: AWS_ACCESS_KEY_ID"), "{none}");
    assert!(none.contains(".s3backer_passwd"), "{none}");
    let from_file = StoreConfig::new("s3://b").env(Default::default()).access_file(&file);
    let found = from_file.resolve_credentials().expect("file");
    assert!(from_file.describe_credentials(found.as_ref()).contains("access file"));
}

#[test]
fn store_urls_with_ignored_parts_are_refused() {
    let err = open_err("memory://foo");
    assert!(err.contains("\"foo\"") && err.contains("memory:///PREFIX/"), "{err}");
    let err = open_err("s3://bucket/vol?versionId=3");
    assert!(err.contains("%3F"), "{err}");
    let err = open_err("s3://bucket/vol#frag");
    assert!(err.contains("%23"), "{err}");
}

/// The URL a GET of `b/0` in bucket `vol` goes to with `config`.
async fn get_url(config: StoreConfig) -> String {
    use object_store::signer::Signer;
    let creds = Some(super::Credentials {
        access_key_id: "id".into(),
        secret_access_key: "secret".into(),
        session_token: None,
        source: super::CredentialSource::Options,
    });
    let s3 = config.s3_builder("vol", creds, None, super::ClientOptions::new()).build().expect("builds");
    let get = object_store::signer::Method::GET;
    let signed = s3.signed_url(get, &"b/0".into(), std::time::Duration::from_secs(60)).await.expect("signs");
    format!("{}://{}{}", signed.scheme(), signed.host_str().unwrap_or_default(), signed.path())
}

#[tokio::test]
async fn virtual_host_requests_put_the_bucket_in_the_host() {
    let base = || StoreConfig::new("s3://vol").env(Default::default()).endpoint("https://s3.example.net");
    assert_eq!(get_url(base()).await, "https://s3.example.net/vol/b/0");
    assert_eq!(get_url(base().virtual_hosted(true)).await, "https://vol.s3.example.net/b/0");
    assert_eq!(super::bucket_endpoint("https://vol.s3.example.net", "vol"), "https://vol.s3.example.net");
    assert_eq!(super::bucket_endpoint("http://127.0.0.1:3900/", "vol"), "http://127.0.0.1:3900/");
}

#[test]
fn only_plain_http_endpoints_sign_the_body() {
    assert!(signs_payload(Some("http://127.0.0.1:3900")));
    assert!(signs_payload(Some("HTTP://minio.lan:9000")));
    assert!(!signs_payload(Some("https://s3.eu-central-003.backblazeb2.com")));
    // No endpoint: AWS itself, over https.
    assert!(!signs_payload(None));
}

/// A block read whole from the memory store is the stored object itself,
/// not a copy of it (the memory store through FUSE then pays no copy per
/// block); a part of it is copied, so a cached part never keeps the whole
/// object alive.
#[tokio::test]
async fn the_memory_store_hands_out_whole_objects_without_a_copy() {
    use object_store::ObjectStoreExt;
    let opened = StoreConfig::new("memory://").open().expect("memory store opens");
    let stored = bytes::Bytes::from(vec![3u8; 256 * 1024]);
    let path = object_store::path::Path::from("b/1");
    opened.store.put(&path, stored.clone().into()).await.expect("put");
    let got = opened.store.get(&path).await.expect("get").bytes().await.expect("body");
    assert_eq!(got.as_ptr(), stored.as_ptr(), "the whole object was copied");
    let part = opened.store.get_range(&path, 0..4096).await.expect("ranged get");
    assert_ne!(part.as_ptr(), stored.as_ptr(), "a part of the object was kept, not copied");
}
