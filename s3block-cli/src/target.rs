//! The store a STORE URL names, opened with the shared store options.
//!
//! Opening is the store crate's ([`StoreArgs::to_config`]): `s3://BUCKET/PREFIX`,
//! `file:///PATH` or `memory:///PREFIX`, credentials from the `AWS_*`
//! environment, then the access file (the line of the access key id, else
//! the first; default `~/.s3backer_passwd`); endpoint and region from the
//! flags, then `S3BLOCK_*`, then `AWS_*`. Every store retries transient
//! errors and counts its requests, so a command can say what it cost.

use std::sync::Arc;

use object_store::ObjectStore;
use s3block_core::{RequestCounters, Result};
use s3block_store::{ListPlan, OpenedStore, StoreArgs, StoreKind};

/// An opened store, the key prefix of the volume in it, and the options
/// that opened it (the password options among them).
#[derive(Debug, Clone)]
pub struct Target {
    /// The store (with retries and request counting).
    pub store: Arc<dyn ObjectStore>,
    /// The volume's key prefix.
    pub prefix: String,
    /// How to list it.
    pub plan: ListPlan,
    /// The URL, for messages.
    pub url: String,
    /// The requests made through this target so far.
    pub counters: Arc<RequestCounters>,
    /// The backend (its bucket name is part of s3backer's encryption key).
    pub kind: StoreKind,
    /// The store options, for the encryption flags and password source.
    pub args: StoreArgs,
}

impl Target {
    /// A target over an existing store handle (tests, and callers that
    /// built their own store): `sorted` says whether it lists keys in order.
    /// Its requests are not counted unless the handle counts into
    /// [`Target::counters`] itself.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl Into<String>, sorted: bool) -> Self {
        let prefix = prefix.into();
        Target {
            store,
            url: format!("(store handle){prefix}"),
            prefix,
            plan: ListPlan { parallelism: if sorted { 4 } else { 1 }, sorted },
            counters: Arc::new(RequestCounters::default()),
            kind: StoreKind::Memory,
            args: StoreArgs::default(),
        }
    }

    /// This target with other store options (password file, `--encrypt`).
    pub fn with_args(mut self, args: StoreArgs) -> Self {
        self.args = args;
        self
    }

    /// The target as the store crate's [`OpenedStore`].
    pub fn opened(&self) -> OpenedStore {
        OpenedStore {
            store: self.store.clone(),
            prefix: self.prefix.clone(),
            counters: self.counters.clone(),
            kind: self.kind.clone(),
            list_plan: self.plan,
        }
    }
}

/// Opens the store `url` names with `args`. Errors name the URL or option at fault.
pub fn open(url: &str, args: &StoreArgs) -> Result<Target> {
    args.check().map_err(s3block_core::Error::Config)?;
    Ok(Target::from_opened(url, args.to_config(url).open()?, args))
}

impl Target {
    /// The target for a store `url` already opened (with `args`).
    pub fn from_opened(url: &str, opened: OpenedStore, args: &StoreArgs) -> Self {
        Target {
            store: opened.store,
            prefix: opened.prefix,
            plan: opened.list_plan,
            url: url.to_owned(),
            counters: opened.counters,
            kind: opened.kind,
            args: args.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_prefixes() {
        let none = StoreArgs::default();
        assert!(open("ftp://x", &none).unwrap_err().to_string().contains("ftp"));
        let with = StoreArgs { prefix: Some("x-".into()), ..Default::default() };
        assert_eq!(open("memory:///vol/", &with).unwrap().prefix, "vol/x-");
        assert_eq!(open("memory://", &none).unwrap().prefix, "");
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let t = open(&url, &none).unwrap();
        assert_eq!(t.prefix, "");
        assert_eq!(t.kind, StoreKind::Local(dir.path().to_path_buf()));
    }
}
