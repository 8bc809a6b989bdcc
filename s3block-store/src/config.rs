//! Opening a store by URL, with credentials from the places s3backer users

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use http::HeaderMap;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{ClientOptions, ObjectStore};
use s3block_core::{Error, RequestCounters, Result};

use crate::bandwidth::{Bandwidth, BandwidthLimits, BandwidthStore};
use crate::chain::{self, InstanceCredentials};
use crate::counting::CountingStore;
use crate::keys::check_prefix;
use crate::list::ListPlan;
use crate::retry::{RetryConfig, RetryStore};
use crate::s3options::{S3Options, SplitWriteStore};
use crate::sidecar::SidecarStore;

/// LIST requests at once over a sorted listing, unless configured.
const DEFAULT_LIST_PARALLELISM: usize = 8;

/// Default name of s3backer's access file, in the home directory.
pub const DEFAULT_ACCESS_FILE: &str = ".s3backer_passwd";

/// Where credentials were found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialSource {
    /// The `AWS_*` environment.
    Environment,
    /// The access key options.
    Options,
    /// An access file.
    AccessFile(PathBuf),
}

/// An access key pair.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token for temporary credentials.
    pub session_token: Option<String>,
    /// Where they came from.
    pub source: CredentialSource,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Which backend a URL chose.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreKind {
    /// S3 or compatible, with the bucket name.
    S3 {
        /// Bucket.
        bucket: String,
    },
    /// A local directory.
    Local(PathBuf),
    /// Memory.
    Memory,
}

impl StoreKind {
    /// The bucket name the s3backer encryption scheme derives its key with:
    /// the S3 bucket; for a local directory its last path component;
    /// `memory` for memory.
    pub fn encryption_bucket_name(&self) -> String {
        match self {
            StoreKind::S3 { bucket } => bucket.clone(),
            StoreKind::Local(path) => {
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "local".into())
            }
            StoreKind::Memory => "memory".into(),
        }
    }
}

/// A store opened from a [`StoreConfig`].
#[derive(Debug, Clone)]
pub struct OpenedStore {
    /// The store, with retries and request counting.
    pub store: Arc<dyn ObjectStore>,
    /// The key prefix of the volume.
    pub prefix: String,
    /// The counters the store adds to.
    pub counters: Arc<RequestCounters>,
    /// The backend.
    pub kind: StoreKind,
    /// How to list this store.
    pub list_plan: ListPlan,
}

/// Parses s3backer's access file: `accessKeyId:secretKey` lines; blank lines
/// and `#` comments are skipped, and so are lines whose key id or secret is
/// empty (no request could be signed with them). Picks the line of
/// `wanted_id` when given, else the first.
pub fn parse_access_file(text: &str, wanted_id: Option<&str>) -> Option<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(id, secret)| (id.trim().to_owned(), secret.trim().to_owned()))
        .filter(|(id, secret)| !id.is_empty() && !secret.is_empty())
        .find(|(id, _)| wanted_id.is_none_or(|w| w == id))
}

/// The most of an access file read: one holds a few lines of keys.
const MAX_ACCESS_FILE: u64 = 64 << 10;

/// The text of an access file, refused past [`MAX_ACCESS_FILE`] bytes (a
/// disk image or a device given by mistake is not read whole).
fn read_access_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?.take(MAX_ACCESS_FILE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_ACCESS_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("more than {MAX_ACCESS_FILE} bytes: not an access file of accessKeyId:secretKey lines"),
        ));
    }
    Ok(text)
}

/// How to reach a store; frontends map their options onto it.
///
/// Opening a store by URL, with credentials from the places s3backer users
/// keep them.
///
/// | URL | store |
/// |---|---|
/// | `s3://bucket[/prefix]` | S3 or an S3-compatible server |
/// | `file:///dir` | a local directory (attributes in sidecars, see [`SidecarStore`]) |
/// | `memory://` | memory, for tests |
///
/// The key prefix is the URL's path (`s3://b/vol` puts blocks under `vol/`);
/// [`StoreConfig::prefix`] sets it literally instead (s3backer's `--prefix`).
///
/// Credentials come from, in order: the `AWS_ACCESS_KEY_ID`/
/// `AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN` environment; the access key
/// options; s3backer's access file (`accessKeyId:secretKey` lines, default
/// `~/.s3backer_passwd`), whose line is chosen by the access key id when one
/// was given, else the first. An empty access key id means no credentials
/// (unsigned requests, for public buckets). Without a key, the credential
/// providers of [`chain`](crate::chain) sign: those the environment names,
/// and the EC2 instance's role when asked ([`StoreConfig::instance_credentials`]). Region and endpoint options win over
/// `AWS_REGION`/`AWS_DEFAULT_REGION` and `AWS_ENDPOINT_URL`.
///
/// Every store is wrapped as `RetryStore<CountingStore<backend>>`: counting
/// sees each attempt, and s3block's retry loop is the only one
/// (`object_store`'s own S3 retries are set to zero; see [`RetryStore`]).
#[derive(Debug, Clone, Default)]
pub struct StoreConfig {
    url: String,
    prefix: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    access_file: Option<PathBuf>,
    force_path_style: bool,
    virtual_hosted: bool,
    list_parallelism: Option<usize>,
    retry: RetryConfig,
    s3: S3Options,
    instance: Option<InstanceCredentials>,
    bandwidth: BandwidthLimits,
    env: Option<HashMap<String, String>>,
}

impl StoreConfig {
    /// A store at `url` (`s3://bucket/prefix`, `file:///dir`, `memory://`).
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig { url: url.into(), ..Default::default() }
    }

    /// Uses `prefix` literally as the key prefix, instead of the URL's path.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// S3 endpoint URL (`http://127.0.0.1:3900` for a loopback server).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// S3 region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Access key id.
    pub fn access_key_id(mut self, id: impl Into<String>) -> Self {
        self.access_key_id = Some(id.into());
        self
    }

    /// Secret access key.
    pub fn secret_access_key(mut self, secret: impl Into<String>) -> Self {
        self.secret_access_key = Some(secret.into());
        self
    }

    /// Session token.
    pub fn session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }

    /// s3backer access file (default `~/.s3backer_passwd`).
    pub fn access_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.access_file = Some(path.into());
        self
    }

    /// Path-style requests (`endpoint/bucket/key`) rather than virtual-host.
    pub fn force_path_style(mut self, on: bool) -> Self {
        self.force_path_style = on;
        self
    }

    /// Virtual-host requests (`bucket.endpoint/key`) even with an endpoint
    /// (whose host gets the bucket in front, unless it starts with it).
    pub fn virtual_hosted(mut self, on: bool) -> Self {
        self.virtual_hosted = on;
        self
    }

    /// LIST requests at once when listing a store whose listing is sorted
    /// (default 8; at least 1). A local directory is listed by one.
    pub fn list_parallelism(mut self, n: usize) -> Self {
        self.list_parallelism = Some(n.max(1));
        self
    }

    /// Retry policy.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// S3 request options: server-side encryption, storage class, ACL.
    pub fn s3_options(mut self, options: S3Options) -> Self {
        self.s3 = options;
        self
    }

    /// Caps the bytes sent and received (see [`BandwidthStore`]).
    pub fn bandwidth(mut self, limits: BandwidthLimits) -> Self {
        self.bandwidth = limits;
        self
    }

    /// Without an access key, sign with the EC2 instance's role (see [`chain`](crate::chain)).
    pub fn instance_credentials(mut self, instance: InstanceCredentials) -> Self {
        self.instance = Some(instance);
        self
    }

    /// Reads `AWS_*` and `HOME` from `env` instead of the process environment.
    pub fn env(mut self, env: HashMap<String, String>) -> Self {
        self.env = Some(env);
        self
    }

    fn var(&self, name: &str) -> Option<String> {
        let v = match &self.env {
            Some(m) => m.get(name).cloned(),
            None => std::env::var(name).ok(),
        };
        v.filter(|s| !s.is_empty())
    }

    /// The region: option, `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub fn resolved_region(&self) -> String {
        self.region
            .clone()
            .or_else(|| self.var("AWS_REGION"))
            .or_else(|| self.var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_owned())
    }

    /// The endpoint: option, else `AWS_ENDPOINT_URL`.
    pub fn resolved_endpoint(&self) -> Option<String> {
        self.endpoint.clone().or_else(|| self.var("AWS_ENDPOINT_URL"))
    }

    /// Finds credentials (in the order [`StoreConfig`] gives); `None` when there are none.
    pub fn resolve_credentials(&self) -> Result<Option<Credentials>> {
        if self.access_key_id.as_deref() == Some("") {
            return Ok(None);
        }
        if let (Some(id), Some(secret)) = (self.var("AWS_ACCESS_KEY_ID"), self.var("AWS_SECRET_ACCESS_KEY")) {
            return Ok(Some(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: self.var("AWS_SESSION_TOKEN"),
                source: CredentialSource::Environment,
            }));
        }
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            return Ok(Some(Credentials {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                session_token: self.session_token.clone(),
                source: CredentialSource::Options,
            }));
        }
        let (path, explicit) = match &self.access_file {
            Some(p) => (p.clone(), true),
            None => match self.var("HOME") {
                Some(home) => (PathBuf::from(home).join(DEFAULT_ACCESS_FILE), false),
                None => return Ok(None),
            },
        };
        let text = match read_access_file(&path) {
            Ok(t) => t,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { path: format!("access file {}", path.display()), source }),
        };
        if let Some(warning) = access_file_warning(&path) {
            tracing::warn!("{warning}");
        }
        match parse_access_file(&text, self.access_key_id.as_deref()) {
            Some((id, secret)) => Ok(Some(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: self.session_token.clone(),
                source: CredentialSource::AccessFile(path),
            })),
            None => Err(Error::Config(match &self.access_key_id {
                Some(id) => format!("access file {} has no line for access key id {id:?}", path.display()),
                None => format!("access file {} has no accessKeyId:secretKey line", path.display()),
            })),
        }
    }

    /// What S3 requests are signed with, in words for messages: the source
    /// of `credentials` (as [`resolve_credentials`](Self::resolve_credentials)
    /// found them), or that none were found and where s3block looked.
    pub fn describe_credentials(&self, credentials: Option<&Credentials>) -> String {
        match credentials {
            Some(c) => match &c.source {
                CredentialSource::Environment => {
                    "the credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY".to_owned()
                }
                CredentialSource::Options => "the credentials from the access key options".to_owned(),
                CredentialSource::AccessFile(p) => {
                    format!("the credentials of the access file {}", p.display())
                }
            },
            None => {
                let file = match (&self.access_file, self.var("HOME")) {
                    (Some(p), _) => p.display().to_string(),
                    (None, Some(home)) => PathBuf::from(home).join(DEFAULT_ACCESS_FILE).display().to_string(),
                    (None, None) => format!("~/{DEFAULT_ACCESS_FILE} (HOME unset)"),
                };
                format!(
                    "no credentials found, tried: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (unset), the access \
                     file {file} (absent); set one of them"
                )
            }
        }
    }

    /// Opens the store: backend, request counting and retries.
    pub fn open(&self) -> Result<OpenedStore> {
        let bad = |why: String| Error::Config(format!("store URL {:?}: {why}", self.url));
        let url = url::Url::parse(&self.url).map_err(|e| bad(e.to_string()))?;
        let url_prefix = url_key_prefix(&url).map_err(bad)?;
        let mut target = None;
        let (base, kind, sorted, prefix): (Arc<dyn ObjectStore>, StoreKind, bool, String) = match url.scheme()
        {
            "s3" => {
                let bucket =
                    url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("no bucket name".into()))?;
                let credentials = self.resolve_credentials()?;
                let provider = match (&credentials, self.access_key_id.as_deref()) {
                    // s3backer's empty access id: unsigned requests, on purpose.
                    (Some(_), _) | (None, Some("")) => None,
                    (None, _) => chain::find(|name| self.var(name), self.instance.as_ref()),
                };
                let signed_with = match &provider {
                    Some((p, _)) => p.describe(),
                    None => self.describe_credentials(credentials.as_ref()),
                };
                target = Some((self.endpoint_description(bucket), bucket.to_owned(), signed_with));
                let signing = provider.map(|(_, config)| config);
                (
                    self.build_s3(bucket, credentials, signing.as_deref())?,
                    StoreKind::S3 { bucket: bucket.to_owned() },
                    true,
                    url_prefix,
                )
            }
            "file" => {
                let dir = url.to_file_path().map_err(|()| bad("not a local path".into()))?;
                local_dir(&dir)?;
                let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(e.to_string()))?;
                (Arc::new(SidecarStore::new(fs)), StoreKind::Local(dir), false, String::new())
            }
            "memory" => {
                if let Some(name) = url.host_str().filter(|h| !h.is_empty()) {
                    return Err(bad(format!(
                        "memory:// takes no name ({name:?} would be ignored): write memory:// or memory:///PREFIX/"
                    )));
                }
                (Arc::new(InMemory::new()), StoreKind::Memory, true, url_prefix)
            }
            other => return Err(bad(format!("unknown scheme {other:?}: use s3://, file:// or memory://"))),
        };
        let prefix = self.prefix.clone().unwrap_or(prefix);
        check_prefix(&prefix, matches!(kind, StoreKind::Local(_)))?;
        let counters = Arc::new(RequestCounters::default());
        // Testing hook, compiled only with the `testing` feature (a release
        // build never reads the variable): S3BLOCK_INJECT_FAULTS puts a
        // FaultStore under counting and retries.
        #[cfg(feature = "testing")]
        let base = crate::faultenv::wrap(base, self.var(crate::faultenv::INJECT_FAULTS_ENV).as_deref())?;
        let base: Arc<dyn ObjectStore> = match Bandwidth::new(self.bandwidth) {
            Some(caps) => Arc::new(BandwidthStore::new(base, caps, counters.clone())),
            None => base,
        };
        let counted = CountingStore::new(base, counters.clone());
        let mut retry = RetryStore::new(counted, self.retry.clone(), counters.clone());
        if matches!(kind, StoreKind::Memory) {
            retry = retry.keeping_whole_bodies();
        }
        if let Some((endpoint, bucket, signed_with)) = target {
            retry = retry.with_target(endpoint, bucket).with_credentials(signed_with);
        }
        let store: Arc<dyn ObjectStore> = Arc::new(retry);
        Ok(OpenedStore {
            store,
            prefix,
            counters,
            kind,
            list_plan: ListPlan {
                parallelism: if sorted {
                    self.list_parallelism.unwrap_or(DEFAULT_LIST_PARALLELISM)
                } else {
                    1
                },
                sorted,
            },
        })
    }

    /// The S3 endpoint as users know it, for messages.
    fn endpoint_description(&self, bucket: &str) -> String {
        match self.resolved_endpoint() {
            Some(ep) => ep,
            None if self.force_path_style => format!("https://s3.{}.amazonaws.com", self.resolved_region()),
            None => format!("https://{bucket}.s3.{}.amazonaws.com", self.resolved_region()),
        }
    }

    fn build_s3(
        &self,
        bucket: &str,
        credentials: Option<Credentials>,
        provider: Option<&[(&'static str, String)]>,
    ) -> Result<Arc<dyn ObjectStore>> {
        let bad = |e: String| Error::Config(format!("cannot configure S3 bucket {bucket:?}: {e}"));
        let (read_client, write_client) = self.s3.client_options(ClientOptions::new()).map_err(bad)?;
        let reader = self.s3_builder(bucket, credentials.clone(), provider, read_client);
        let reader = self.quickack(reader, HeaderMap::new()).build().map_err(|e| bad(e.to_string()))?;
        Ok(match write_client {
            Some(client) => {
                let writer = self.s3_builder(bucket, credentials, provider, client);
                let writer = self.quickack(writer, self.s3.write_headers().map_err(bad)?).build();
                Arc::new(SplitWriteStore::new(reader, writer.map_err(|e| bad(e.to_string()))?))
            }
            None => Arc::new(reader),
        })
    }

    /// `builder` with s3block's own HTTP client when the endpoint is plain
    /// `http://`, unless the environment says otherwise (see
    /// [`QUICKACK_ENV`](crate::QUICKACK_ENV)); the writer's client carries
    /// the write `headers`.
    fn quickack(&self, builder: AmazonS3Builder, headers: HeaderMap) -> AmazonS3Builder {
        let plain = self.resolved_endpoint().is_some_and(|ep| ep.starts_with("http://"));
        if !plain || !crate::quickack::wanted() {
            return builder;
        }
        let timeout = self.s3.timeout.unwrap_or(crate::quickack::REQUEST_TIMEOUT);
        builder.with_http_connector(crate::quickack::QuickAckConnector { timeout, headers })
    }

    /// The S3 client of `bucket` with `client`'s HTTP options, signed with
    /// `credentials`, else by the credential `provider`, else not at all.
    fn s3_builder(
        &self,
        bucket: &str,
        credentials: Option<Credentials>,
        provider: Option<&[(&'static str, String)]>,
        client: ClientOptions,
    ) -> AmazonS3Builder {
        let mut endpoint = self.resolved_endpoint();
        if self.virtual_hosted {
            endpoint = endpoint.map(|ep| bucket_endpoint(&ep, bucket));
        }
        let mut b = AmazonS3Builder::new()
            .with_client_options(client)
            .with_bucket_name(bucket)
            .with_region(self.resolved_region())
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_virtual_hosted_style_request(
                self.virtual_hosted || (!self.force_path_style && endpoint.is_none()),
            )
            .with_retry(object_store::RetryConfig { max_retries: 0, ..Default::default() });
        if let Some(ep) = &endpoint {
            b = b.with_endpoint(ep).with_allow_http(ep.starts_with("http://"));
        }
        b = b.with_unsigned_payload(!signs_payload(endpoint.as_deref()));
        match credentials {
            Some(c) => {
                b = b.with_access_key_id(c.access_key_id).with_secret_access_key(c.secret_access_key);
                if let Some(t) = c.session_token {
                    b = b.with_token(t);
                }
            }
            None => match provider {
                Some(config) => b = chain::apply(b, config),
                None => b = b.with_skip_signature(true),
            },
        }
        self.s3.apply_sse(b)
    }
}

/// The key prefix a store URL's path gives (`s3://b/vol` and `s3://b/vol/`
/// give `vol/`), with its percent-escapes decoded: the prefix is the bytes
/// the user meant, not the URL's spelling of them. A `?` or `#` in a URL
/// starts a query or a fragment, which a store URL has none of: the error
/// says to write them as `%3F` and `%23`, or to give `--prefix`.
pub(crate) fn url_key_prefix(url: &url::Url) -> std::result::Result<String, String> {
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a store URL has no query or fragment: write '?' as %3F and '#' as %23 in the \
             prefix, or give the prefix apart from the URL"
            .into());
    }
    let path = percent_encoding::percent_decode_str(url.path())
        .decode_utf8()
        .map_err(|e| format!("its path is not UTF-8 once decoded: {e}"))?;
    let p = path.strip_prefix('/').unwrap_or(&path);
    Ok(if p.is_empty() || p.ends_with('/') { p.to_owned() } else { format!("{p}/") })
}

/// The endpoint of `bucket` on the server at `endpoint`, for virtual-host
/// requests: the bucket in front of the host, unless it is there already.
/// An endpoint that is not a URL is left as it is (the client refuses it).
fn bucket_endpoint(endpoint: &str, bucket: &str) -> String {
    let Ok(mut url) = url::Url::parse(endpoint) else { return endpoint.to_owned() };
    let Some(host) = url.host_str().map(str::to_owned) else { return endpoint.to_owned() };
    if host.starts_with(&format!("{bucket}.")) || url.set_host(Some(&format!("{bucket}.{host}"))).is_err() {
        return endpoint.to_owned();
    }
    url.as_str().trim_end_matches('/').to_owned()
}

/// A warning when the access file at `path` can be read by users other than
/// its owner: it holds secret keys.
fn access_file_warning(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o004 != 0).then(|| {
        format!(
            "the access file {} can be read by every user of this machine (mode {:o}): it holds secret keys; \
             make it private with chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

/// Makes sure a local store's directory can be used: an existing directory,
/// or a new one whose parent exists (a mistyped path does not grow a tree
/// of directories). Errors name the path and what it is.
fn local_dir(dir: &std::path::Path) -> Result<()> {
    let io = |source| Error::Io { path: dir.display().to_string(), source };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(Error::Config(format!(
                "store directory {} is a file, not a directory: file:// names the directory that holds the volume",
                dir.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && !parent.is_dir() => Err(Error::Config(format!(
            "store directory {}: its parent {} does not exist (create it first; s3block creates only the last directory)",
            dir.display(),
            parent.display()
        ))),
        _ => {
            std::fs::create_dir(dir).map_err(io)?;
            tracing::info!("created the store directory {}", dir.display());
            Ok(())
        }
    }
}

/// Whether PUTs sign a SHA-256 of their body. Over TLS (every endpoint but a
/// plain `http://` one) the connection already protects the body, so the
/// hash is left out: it is the largest CPU cost of an upload, about 0.5 s
/// per GiB on these 2-core machines. Over plain HTTP the signed hash is the
/// only check the server makes that the body arrived as sent, so it stays.
fn signs_payload(endpoint: Option<&str>) -> bool {
    endpoint.is_some_and(|ep| ep.to_ascii_lowercase().starts_with("http://"))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
