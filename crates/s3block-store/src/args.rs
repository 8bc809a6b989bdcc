//! The store options every s3block program shares, as a clap argument group.
//!
//! Both the mount program and the `s3block` command flatten [`StoreArgs`],
//! so a volume is reached with the same flags, the same s3backer spellings
//! and the same environment whichever program opens it. Compiled with the
//! `clap` feature.
//!
//! Environment variables fill in what the flags leave out; the standard
//! `AWS_*` variables are read by [`StoreConfig`] itself (after these):
//!
//! | flag | s3backer spelling | environment |
//! |---|---|---|
//! | `--endpoint` | `--baseURL` | `S3BLOCK_ENDPOINT`, then `AWS_ENDPOINT_URL` |
//! | `--region` | `--region` | `S3BLOCK_REGION`, then `AWS_REGION`, `AWS_DEFAULT_REGION` |
//! | `--access-file` | `--accessFile` | `S3BLOCK_ACCESS_FILE`, else `~/.s3backer_passwd` |
//! | `--force-path-style` | | `S3BLOCK_FORCE_PATH_STYLE` |
//! | `--prefix` | `--prefix` | `S3BLOCK_PREFIX` |

use std::path::PathBuf;

use crate::config::StoreConfig;

/// Where a volume's store is and how to reach it: flatten into a clap parser.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct StoreArgs {
    /// S3 endpoint URL, for S3-compatible servers (Garage, MinIO, ...); AWS when unset.
    #[arg(long, alias = "baseURL", env = "S3BLOCK_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,

    /// S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long, env = "S3BLOCK_REGION", value_name = "REGION")]
    pub region: Option<String>,

    /// File of `accessKeyId:secretKey` lines, s3backer's format (default ~/.s3backer_passwd).
    #[arg(long = "access-file", alias = "accessFile", env = "S3BLOCK_ACCESS_FILE", value_name = "FILE")]
    pub access_file: Option<PathBuf>,

    /// Address buckets as ENDPOINT/BUCKET rather than BUCKET.ENDPOINT (always so with --endpoint).
    #[arg(long = "force-path-style", env = "S3BLOCK_FORCE_PATH_STYLE")]
    pub force_path_style: bool,

    /// Key prefix inside the bucket, added after the one in STORE (s3://bucket/vol/ + p- gives vol/p-).
    #[arg(long, env = "S3BLOCK_PREFIX", value_name = "PREFIX")]
    pub prefix: Option<String>,
}

impl StoreArgs {
    /// The key prefix these options give for the store `url`: the URL's own
    /// prefix (its path, for `s3://` and `memory://`) followed by `--prefix`.
    /// `None` when `--prefix` is not given (the URL's prefix applies as is).
    pub fn key_prefix(&self, url: &str) -> Option<String> {
        let extra = self.prefix.as_deref()?;
        let base = match url::Url::parse(url) {
            Ok(u) if u.scheme() != "file" => {
                let p = u.path().trim_start_matches('/');
                if p.is_empty() || p.ends_with('/') { p.to_owned() } else { format!("{p}/") }
            }
            // A directory's path is not a key prefix; a bad URL fails when opened.
            _ => String::new(),
        };
        Some(format!("{base}{extra}"))
    }

    /// The [`StoreConfig`] for the store at `url` with these options.
    pub fn to_config(&self, url: &str) -> StoreConfig {
        let mut config = StoreConfig::new(url).force_path_style(self.force_path_style);
        if let Some(endpoint) = &self.endpoint {
            config = config.endpoint(endpoint);
        }
        if let Some(region) = &self.region {
            config = config.region(region);
        }
        if let Some(file) = &self.access_file {
            config = config.access_file(file);
        }
        if let Some(prefix) = self.key_prefix(url) {
            config = config.prefix(prefix);
        }
        config
    }
}

#[cfg(test)]
mod tests {
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
        let opened = a.to_config("memory://host/vol").open().expect("memory store opens");
        assert_eq!(opened.prefix, "vol/p-");
        let opened = StoreArgs::default().to_config("memory://host/vol").open().expect("memory store opens");
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
}
