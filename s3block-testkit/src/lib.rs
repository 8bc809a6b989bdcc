//! What the tests of every s3block crate share: the S3 test server's
//! settings, unique key prefixes, the real-kernel helpers of [`kernel`]
//! (mount programs, loop devices, ext4), and [`proxy`], a TCP proxy that
//! makes the server unreachable and brings it back, for outage tests.
//!
//! This crate depends on no s3block frontend, so the tests of the mount
//! program and of the CLI use it as the workspace `tests` package does,
//! without a dependency cycle.
//!
//! The tests that need a real S3 server get it from the environment that
//! `scripts/garage.sh start` writes (a single-node Garage on loopback):
//!
//! ```text
//! scripts/garage.sh start
//! . "$(scripts/garage.sh env)"
//! cargo test -p s3block-tests
//! ```
//!
//! [`s3_env`] reads that environment. When it is absent a test skips with a
//! message, except under `CI=true`, where it fails and says how to start the
//! server: CI never passes by skipping. [`unique_prefix`] gives each test its
//! own key prefix so tests can share one bucket.

pub mod kernel;
pub mod proxy;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::{BackoffConfig, RetryConfig};

/// Environment variable holding the S3 endpoint URL of the test server.
pub const ENDPOINT_VAR: &str = "S3BLOCK_TEST_S3_ENDPOINT";
/// Environment variable holding the test bucket name.
pub const BUCKET_VAR: &str = "S3BLOCK_TEST_S3_BUCKET";
/// Environment variable holding the access key id.
pub const ACCESS_KEY_VAR: &str = "AWS_ACCESS_KEY_ID";
/// Environment variable holding the secret access key.
pub const SECRET_KEY_VAR: &str = "AWS_SECRET_ACCESS_KEY";
/// Environment variable holding the region the server expects in signatures.
pub const REGION_VAR: &str = "AWS_REGION";

/// Region used when `AWS_REGION` is unset: the one `scripts/garage.sh`
/// configures (us-east-1, which s3backer signs for).
pub const DEFAULT_REGION: &str = "us-east-1";

/// Connection settings of the S3 server the tests run against.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Env {
    /// Endpoint URL, such as `http://127.0.0.1:3900`.
    pub endpoint: String,
    /// Bucket the tests may write into.
    pub bucket: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Region used to sign requests.
    pub region: String,
}

impl fmt::Debug for S3Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Env")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("region", &self.region)
            .finish()
    }
}

impl S3Env {
    /// Reads the settings through `get`, a lookup of environment variables.
    ///
    /// Returns the names of the missing variables when any required one is
    /// absent or empty. The region defaults to [`DEFAULT_REGION`].
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<&'static str>> {
        let read =
            |name: &'static str, missing: &mut Vec<&'static str>| match get(name).filter(|v| !v.is_empty()) {
                Some(v) => v,
                None => {
                    missing.push(name);
                    String::new()
                }
            };
        let mut missing = Vec::new();
        let endpoint = read(ENDPOINT_VAR, &mut missing);
        let bucket = read(BUCKET_VAR, &mut missing);
        let access_key_id = read(ACCESS_KEY_VAR, &mut missing);
        let secret_access_key = read(SECRET_KEY_VAR, &mut missing);
        if !missing.is_empty() {
            return Err(missing);
        }
        let region = get(REGION_VAR).filter(|v| !v.is_empty()).unwrap_or_else(|| DEFAULT_REGION.to_owned());
        Ok(Self { endpoint, bucket, access_key_id, secret_access_key, region })
    }

    /// The same settings with another bucket (see `scripts/garage.sh bucket`).
    pub fn with_bucket(&self, bucket: impl Into<String>) -> Self {
        Self { bucket: bucket.into(), ..self.clone() }
    }

    /// An `object_store` builder for this server: path-style requests, plain
    /// http allowed (loopback), conditional put by ETag, and retries short
    /// enough that a test against a dead server fails in seconds.
    pub fn builder(&self) -> AmazonS3Builder {
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
        };
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(&self.bucket)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key)
            .with_region(&self.region)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(retry)
    }

    /// The bucket as an `object_store` client.
    ///
    /// # Panics
    /// When the settings cannot make a client (a malformed endpoint URL):
    /// a test setup error, reported with the endpoint named.
    pub fn store(&self) -> Arc<AmazonS3> {
        match self.builder().build() {
            Ok(store) => Arc::new(store),
            Err(e) => panic!("cannot build an S3 client for {self:?}: {e}"),
        }
    }
}

/// Whether the tests run under CI (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    ci_flag(std::env::var("CI").ok().as_deref())
}

fn ci_flag(value: Option<&str>) -> bool {
    match value.map(str::trim) {
        None | Some("") | Some("0") => false,
        Some(v) => !v.eq_ignore_ascii_case("false"),
    }
}

/// The message given when the S3 server settings are missing.
pub fn missing_message(missing: &[&str]) -> String {
    format!(
        "no S3 test server: {} not set. Start one with `scripts/garage.sh start` \
         and load its settings with `. \"$(scripts/garage.sh env)\"` \
         (scripts/test.sh does both)",
        missing.join(", ")
    )
}

/// The S3 server to test against, from the environment.
///
/// Returns `None` (after printing why, so the skip is visible with
/// `--nocapture`) when it is not configured, and the test should return.
///
/// # Panics
/// Under CI (`CI=true`) when the settings are missing: CI must not pass by
/// skipping. The message names the missing variables and how to start Garage.
pub fn s3_env() -> Option<S3Env> {
    match S3Env::from_lookup(|name| std::env::var(name).ok()) {
        Ok(env) => Some(env),
        Err(missing) => {
            let message = missing_message(&missing);
            if in_ci() {
                panic!("CI=true and {message}");
            }
            eprintln!("SKIPPED (not under CI): {message}");
            None
        }
    }
}

/// A key prefix no other test or run uses, ending in `/`:
/// `s3block-tests/{name}-{unix nanos}-{pid}-{counter}/`.
///
/// `name` should be the test's name; characters other than ASCII letters,
/// digits, `-` and `_` are replaced by `_` so the prefix is a valid key.
pub fn unique_prefix(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("s3block-tests/{clean}-{nanos}-{}-{n}/", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn env_reads_all_settings() {
        let env = S3Env::from_lookup(lookup(&[
            (ENDPOINT_VAR, "http://127.0.0.1:3900"),
            (BUCKET_VAR, "b"),
            (ACCESS_KEY_VAR, "GKid"),
            (SECRET_KEY_VAR, "secret"),
            (REGION_VAR, "eu"),
        ]))
        .expect("all set");
        assert_eq!(env.endpoint, "http://127.0.0.1:3900");
        assert_eq!(env.bucket, "b");
        assert_eq!(env.access_key_id, "GKid");
        assert_eq!(env.secret_access_key, "secret");
        assert_eq!(env.region, "eu");
        assert!(!format!("{env:?}").contains("secret\""));
        assert_eq!(env.with_bucket("other").bucket, "other");
    }

    #[test]
    fn env_names_every_missing_variable_and_defaults_region() {
        let missing =
            S3Env::from_lookup(lookup(&[(BUCKET_VAR, "b"), (ENDPOINT_VAR, "")])).expect_err("incomplete");
        assert_eq!(missing, vec![ENDPOINT_VAR, ACCESS_KEY_VAR, SECRET_KEY_VAR]);
        let message = missing_message(&missing);
        assert!(message.contains(ENDPOINT_VAR) && message.contains("scripts/garage.sh start"));

        let env = S3Env::from_lookup(lookup(&[
            (ENDPOINT_VAR, "http://e"),
            (BUCKET_VAR, "b"),
            (ACCESS_KEY_VAR, "k"),
            (SECRET_KEY_VAR, "s"),
        ]))
        .expect("complete");
        assert_eq!(env.region, DEFAULT_REGION);
    }

    #[test]
    fn ci_flag_values() {
        assert!(ci_flag(Some("true")));
        assert!(ci_flag(Some("1")));
        assert!(!ci_flag(Some("false")));
        assert!(!ci_flag(Some("FALSE")));
        assert!(!ci_flag(Some("0")));
        assert!(!ci_flag(Some("")));
        assert!(!ci_flag(None));
    }

    #[test]
    fn prefixes_are_unique_and_clean() {
        let a = unique_prefix("my test/with:odd chars");
        let b = unique_prefix("my test/with:odd chars");
        assert_ne!(a, b);
        assert!(a.starts_with("s3block-tests/my_test_with_odd_chars-"));
        assert!(a.ends_with('/'));
        assert_eq!(a.matches('/').count(), 2);
    }
}
