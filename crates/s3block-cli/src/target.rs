//! Opening the store a STORE URL names: `s3://BUCKET/PREFIX`,
//! `file:///PATH` or `memory://`, with the connection options.
//!
//! Every store is wrapped in the store crate's retry layer, so a transient
//! error is retried with backoff before a command gives up. A local
//! directory keeps object attributes (Content-Encoding, block 0 metadata)
//! in sidecar files, as the mount does.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use s3block_core::{Error, RequestCounters, Result};
use s3block_store::{ListPlan, RetryConfig, RetryStore, SidecarStore};

use crate::args::ConnectionArgs;

/// An opened store and the key prefix of the volume in it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The store (with retries).
    pub store: Arc<dyn ObjectStore>,
    /// The volume's key prefix.
    pub prefix: String,
    /// How to list it.
    pub plan: ListPlan,
    /// The URL, for messages.
    pub url: String,
}

impl Target {
    /// A target over an existing store handle (tests, and callers that
    /// built their own store): `sorted` says whether it lists keys in order.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl Into<String>, sorted: bool) -> Self {
        let prefix = prefix.into();
        Target {
            store,
            url: format!("(store handle){prefix}"),
            prefix,
            plan: ListPlan { parallelism: if sorted { 4 } else { 1 }, sorted },
        }
    }
}

/// Opens the store `url` names; `extra_prefix` (`--prefix`) is appended to
/// the prefix in the URL. Errors name the URL or option at fault.
pub fn open(url: &str, conn: &ConnectionArgs, extra_prefix: Option<&str>) -> Result<Target> {
    let bad = |why: &str| Error::Config(format!("store {url:?}: {why}"));
    let (scheme, rest) =
        url.split_once("://").ok_or_else(|| bad("expected s3://BUCKET/PREFIX, file:///PATH or memory://"))?;
    let (store, mut prefix, sorted): (Arc<dyn ObjectStore>, String, bool) = match scheme {
        "memory" => (Arc::new(InMemory::new()), rest.trim_start_matches('/').to_owned(), true),
        "file" => {
            if rest.is_empty() || !rest.starts_with('/') {
                return Err(bad("a file:// store needs an absolute path, as in file:///srv/volume"));
            }
            let fs = LocalFileSystem::new_with_prefix(rest).map_err(|e| bad(&e.to_string()))?;
            (Arc::new(SidecarStore::new(fs)), String::new(), false)
        }
        "s3" => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name"));
            }
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(endpoint) = &conn.endpoint {
                b = b.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
            }
            if let Some(region) = &conn.region {
                b = b.with_region(region);
            }
            if let Some(path) = &conn.access_file {
                let (id, secret) = read_access_file(path)?;
                b = b.with_access_key_id(id).with_secret_access_key(secret);
            }
            if conn.force_path_style {
                b = b.with_virtual_hosted_style_request(false);
            }
            let s3 = b.build().map_err(|e| bad(&e.to_string()))?;
            (Arc::new(s3), prefix.to_owned(), true)
        }
        other => return Err(bad(&format!("unknown scheme {other:?}; expected s3, file or memory"))),
    };
    if let Some(extra) = extra_prefix {
        prefix.push_str(extra);
    }
    let counters = Arc::new(RequestCounters::default());
    let store: Arc<dyn ObjectStore> = Arc::new(RetryStore::new(store, RetryConfig::default(), counters));
    let mut target = Target::new(store, prefix, sorted);
    target.url = url.to_owned();
    Ok(target)
}

/// Reads an s3backer-style access file: `ACCESS_KEY_ID:SECRET` on the first
/// non-comment line.
pub fn read_access_file(path: &std::path::Path) -> Result<(String, String)> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| Error::Io { path: format!("--access-file {}", path.display()), source })?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or("");
    match line.split_once(':') {
        Some((id, secret)) if !id.is_empty() && !secret.is_empty() => Ok((id.to_owned(), secret.to_owned())),
        _ => Err(Error::Config(format!(
            "--access-file {}: expected ACCESS_KEY_ID:SECRET_ACCESS_KEY on one line",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let c = ConnectionArgs::default();
        assert!(open("ftp://x", &c, None).unwrap_err().to_string().contains("ftp"));
        assert!(open("nothing", &c, None).unwrap_err().to_string().contains("s3://"));
        assert!(open("file://relative", &c, None).unwrap_err().to_string().contains("absolute"));
        let t = open("memory://vol/", &c, Some("x-")).unwrap();
        assert_eq!(t.prefix, "vol/x-");
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        assert_eq!(open(&url, &c, None).unwrap().prefix, "");
    }

    #[test]
    fn access_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s3.crd");
        std::fs::write(&p, "# keys\nAKID:se:cret\n").unwrap();
        assert_eq!(read_access_file(&p).unwrap(), ("AKID".into(), "se:cret".into()));
        std::fs::write(&p, "nocolon\n").unwrap();
        assert!(read_access_file(&p).unwrap_err().to_string().contains("ACCESS_KEY_ID"));
        assert!(read_access_file(&dir.path().join("none")).is_err());
    }
}
