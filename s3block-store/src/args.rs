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
//! | `--force-path-style` | `--no-vhost` | `S3BLOCK_FORCE_PATH_STYLE` |
//! | `--vhost` | the same | |
//! | `--list-threads N` | `--listBlocksThreads` | |
//! | `--ca-cert FILE` | `--cacert` | |
//! | `--insecure-tls` | `--insecure` (the mount program only: `s3block-nbd --insecure` is its own) | |
//! | `--prefix` | `--prefix` | `S3BLOCK_PREFIX` |
//! | `--encrypt[=SCHEME]` | `--encrypt` | |
//! | `--password-file` | `--passwordFile` | `S3BLOCK_PASSWORD_FILE`; the password itself in `S3BLOCK_PASSWORD` |
//! | `--sse`, `--sse-key-id` | the same | |
//! | `--storage-class` | `--storageClass` | |
//! | `--access-type` | `--accessType` | |
//! | `--access-id` | `--accessId` | |
//! | `--access-key-env VARNAME` | `--accessKeyEnv` | the secret in `$VARNAME` |
//! | `--instance-credentials[=ROLE]` | `--accessEC2IAM` | |
//! | `--imdsv2-only` | `--accessEC2IAM-IMDSv2` | |
//! | `--request-timeout SECONDS` | `--timeout` | |
//! | `--max-upload-speed BITS` | `--maxUploadSpeed` | |
//! | `--max-download-speed BITS` | `--maxDownloadSpeed` | |
//! | `--default-content-encoding ENC` | `--defaultContentEncoding` | |
//!
//! Without an access key, the providers of [`chain`](crate::chain) sign
//! (web identity, ECS, EKS Pod Identity from the environment; the EC2
//! instance role with `--instance-credentials`). s3backer's `--accessKey=`
//! is refused like `--password=`.
//!
//! # Encryption and passwords
//!
//! `--encrypt` creates an encrypted volume (XChaCha20-Poly1305 with an
//! Argon2id key; `--encrypt=aes-128-cbc` for s3backer's scheme). Opening a
//! volume needs no flag: its descriptor says whether it is encrypted. Only a
//! volume s3backer made (no descriptor) needs `--encrypt` to be opened
//! encrypted. The password comes from `--password-file`, else
//! `S3BLOCK_PASSWORD`, else a prompt on the terminal (twice when creating).
//! It never goes on the command line: s3backer's `--password=` is refused.

use std::path::PathBuf;

use s3block_core::Result;

use crate::bandwidth::BandwidthLimits;
use crate::chain::InstanceCredentials;
use crate::config::{OpenedStore, StoreConfig, StoreKind};
use crate::encryption::{EncryptionOptions, EncryptionScheme};
use crate::password::{PASSWORD_ENV, Password, PasswordPrompt, PasswordSource, obtain_password};
use crate::s3options::{S3Options, ServerSideEncryption, parse_canned_acl, parse_storage_class};
use crate::volume::read_descriptor;

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
    #[arg(long = "force-path-style", alias = "no-vhost", env = "S3BLOCK_FORCE_PATH_STYLE")]
    pub force_path_style: bool,

    /// Address buckets as BUCKET.ENDPOINT even with --endpoint (its host gets the bucket in front).
    #[arg(long, conflicts_with = "force_path_style")]
    pub vhost: bool,

    /// Key prefix inside the bucket, added after the one in STORE (s3://bucket/vol/ + p- gives vol/p-).
    #[arg(long, env = "S3BLOCK_PREFIX", value_name = "PREFIX")]
    pub prefix: Option<String>,

    /// Encrypt a new volume: xchacha20poly1305 (the default), or aes-128-cbc for s3backer's scheme.
    /// An existing volume's descriptor says whether it is encrypted; only a volume s3backer made needs this flag.
    #[arg(long, value_name = "SCHEME", require_equals = true, value_parser = encrypt_arg)]
    pub encrypt: Option<Option<EncryptionScheme>>,

    /// File whose first line is the encryption password (else S3BLOCK_PASSWORD, else a prompt).
    #[arg(
        long = "password-file",
        alias = "passwordFile",
        env = "S3BLOCK_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,

    /// Refused: a password on the command line is visible to every user of the machine.
    #[arg(long, hide = true, value_name = "PASSWORD", value_parser = Refuse(PASSWORD_REFUSED))]
    pub password: Option<String>,

    /// Server-side encryption of the blocks written: AES256 (keys kept by S3) or aws:kms.
    #[arg(long, value_name = "TYPE", value_parser = ["AES256", "aws:kms"])]
    pub sse: Option<String>,

    /// The KMS key of --sse aws:kms (else the bucket's default KMS key).
    #[arg(long = "sse-key-id", value_name = "ID", requires = "sse")]
    pub sse_key_id: Option<String>,

    /// Storage class of the blocks written (STANDARD_IA, INTELLIGENT_TIERING, ...).
    #[arg(long = "storage-class", alias = "storageClass", value_name = "CLASS", value_parser = parse_storage_class)]
    pub storage_class: Option<String>,

    /// Canned ACL of the blocks written (private, bucket-owner-full-control, ...).
    #[arg(long = "access-type", alias = "accessType", value_name = "ACL", value_parser = parse_canned_acl)]
    pub access_type: Option<String>,

    /// Access key id: picks the access file's line with this id, or goes
    /// with --access-key-env; empty for unsigned requests (public buckets).
    /// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, when set, come first.
    #[arg(long = "access-id", alias = "accessId", value_name = "ID")]
    pub access_id: Option<String>,

    /// Environment variable holding the secret access key of --access-id.
    #[arg(long = "access-key-env", alias = "accessKeyEnv", value_name = "VARNAME", requires = "access_id")]
    pub access_key_env: Option<String>,

    /// Refused: a secret key on the command line is visible to every user of the machine.
    #[arg(long = "access-key", alias = "accessKey", hide = true, value_name = "KEY", value_parser = Refuse(ACCESS_KEY_REFUSED))]
    pub access_key: Option<String>,

    /// Without an access key, sign with the EC2 instance's role, from the
    /// instance metadata service (IMDSv2, else IMDSv1). ROLE is the role
    /// the instance has (the service names it).
    #[arg(
        long = "instance-credentials",
        alias = "accessEC2IAM",
        value_name = "ROLE",
        num_args = 0..=1,
        require_equals = true,
        conflicts_with = "access_id"
    )]
    pub instance_credentials: Option<Option<String>>,

    /// Time limit of one attempt of an S3 request, connection and transfer
    /// included (default 30); an attempt that runs out is retried.
    #[arg(long = "request-timeout", alias = "timeout", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub request_timeout: Option<u64>,

    /// Cap on the bytes sent, in bits a second (e.g. 8M; suffixes K, M, G
    /// are powers of 1024), for all uploads together.
    #[arg(long = "max-upload-speed", alias = "maxUploadSpeed", value_name = "BITS", value_parser = speed_arg)]
    pub max_upload_speed: Option<u64>,

    /// Cap on the bytes received, in bits a second, for all downloads together.
    #[arg(long = "max-download-speed", alias = "maxDownloadSpeed", value_name = "BITS", value_parser = speed_arg)]
    pub max_download_speed: Option<u64>,

    /// PEM file of certificate authorities to trust for an https:// endpoint, besides the system's.
    #[arg(long = "ca-cert", alias = "cacert", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Do not verify the certificate of an https:// endpoint (anyone on the way can read and change the data).
    /// The mount program also takes s3backer's spelling, --insecure.
    #[arg(long = "insecure-tls", conflicts_with = "ca_cert")]
    pub insecure_tls: bool,

    /// LIST requests at once when listing the blocks of an S3 store (default 8).
    #[arg(long = "list-threads", alias = "listBlocksThreads", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub list_threads: Option<u32>,

    /// With --instance-credentials, never fall back to IMDSv1.
    #[arg(long = "imdsv2-only", alias = "accessEC2IAM-IMDSv2", requires = "instance_credentials")]
    pub imdsv2_only: bool,

    /// Read a block object stored without a Content-Encoding as if it had
    /// ENC (deflate, zstd, or with s3backer's encryption "deflate,
    /// encrypt-AES-128-CBC"): for stores that drop the header. Blocks with
    /// their own Content-Encoding keep being read by it.
    #[arg(
        long = "default-content-encoding",
        alias = "defaultContentEncoding",
        value_name = "ENC",
        value_parser = crate::codec::parse_content_encoding
    )]
    pub default_content_encoding: Option<String>,
}

/// A speed in bits a second (at least 8: one byte a second).
fn speed_arg(text: &str) -> std::result::Result<u64, String> {
    match s3block_core::parse_size(text) {
        Ok(bits) if bits >= 8 => Ok(bits),
        Ok(_) => Err(format!("{text}: a speed of at least 8 bits a second")),
        Err(e) => Err(e.to_string()),
    }
}

fn encrypt_arg(text: &str) -> std::result::Result<EncryptionScheme, String> {
    EncryptionScheme::parse(text).map_err(|e| e.to_string())
}

/// The message for s3backer's `--password=`, which s3block refuses.
const PASSWORD_REFUSED: &str = "--password is refused: a password on the command line is visible to every \
    user of the machine (ps, /proc); put it in a file readable only by you and give --password-file FILE, \
    or set S3BLOCK_PASSWORD";

/// The message for s3backer's `--accessKey=`, which s3block refuses.
const ACCESS_KEY_REFUSED: &str = "--accessKey is refused: a secret key on the command line is visible to \
    every user of the machine (ps, /proc); put it in an access file readable only by you (--access-file, \
    lines accessKeyId:secretKey), or in AWS_SECRET_ACCESS_KEY, or in a variable named by --access-key-env";

/// Refuses every value of an option with its message, without repeating the value.
#[derive(Debug, Clone, Copy)]
struct Refuse(&'static str);

impl clap::builder::TypedValueParser for Refuse {
    type Value = String;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        _value: &std::ffi::OsStr,
    ) -> std::result::Result<String, clap::Error> {
        Err(clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{}\n", self.0)))
    }
}

impl StoreArgs {
    /// The key prefix these options give for the store `url`: the URL's own
    /// prefix (its path, for `s3://` and `memory://`) followed by `--prefix`.
    /// `None` when `--prefix` is not given (the URL's prefix applies as is).
    pub fn key_prefix(&self, url: &str) -> Option<String> {
        let extra = self.prefix.as_deref()?;
        let base = match url::Url::parse(url) {
            // A URL whose prefix cannot be read fails when opened.
            Ok(u) if u.scheme() != "file" => crate::config::url_key_prefix(&u).unwrap_or_default(),
            // A directory's path is not a key prefix; a bad URL fails when opened.
            _ => String::new(),
        };
        Some(format!("{base}{extra}"))
    }

    /// Cross-option checks that clap cannot express; the message names the
    /// option at fault. [`to_config`](Self::to_config) assumes they passed.
    pub fn check(&self) -> std::result::Result<(), String> {
        self.s3_options()?;
        self.secret_from_env().map(drop)
    }

    /// The secret access key from the variable --access-key-env names.
    fn secret_from_env(&self) -> std::result::Result<Option<String>, String> {
        let Some(var) = &self.access_key_env else { return Ok(None) };
        match std::env::var(var) {
            Ok(secret) if !secret.is_empty() => Ok(Some(secret)),
            _ => Err(format!(
                "--access-key-env {var}: the variable {var} is not set or empty (it should hold the secret access key)"
            )),
        }
    }

    /// The S3 request options: --sse, --sse-key-id, --storage-class, --access-type.
    pub fn s3_options(&self) -> std::result::Result<S3Options, String> {
        let sse = match &self.sse {
            Some(kind) => Some(
                ServerSideEncryption::parse(kind, self.sse_key_id.as_deref())
                    .map_err(|e| format!("--sse {kind} with --sse-key-id: {e}"))?,
            ),
            None => None,
        };
        Ok(self.s3_options_with(sse))
    }

    fn s3_options_with(&self, sse: Option<ServerSideEncryption>) -> S3Options {
        S3Options {
            sse,
            storage_class: self.storage_class.clone(),
            acl: self.access_type.clone(),
            timeout: self.request_timeout.map(std::time::Duration::from_secs),
            ca_certificates: self.ca_cert.clone(),
            insecure: self.insecure_tls,
        }
    }

    /// The [`StoreConfig`] for the store at `url` with these options
    /// (checked with [`check`](Self::check); unchecked, a KMS key id given
    /// with `--sse AES256` is left out, the encryption is not).
    pub fn to_config(&self, url: &str) -> StoreConfig {
        let s3 =
            self.s3_options().unwrap_or_else(|_| self.s3_options_with(Some(ServerSideEncryption::Aes256)));
        let bandwidth = BandwidthLimits {
            upload: self.max_upload_speed.map(|bits| bits / 8),
            download: self.max_download_speed.map(|bits| bits / 8),
        };
        let mut config = StoreConfig::new(url)
            .force_path_style(self.force_path_style)
            .virtual_hosted(self.vhost)
            .s3_options(s3)
            .bandwidth(bandwidth);
        if let Some(endpoint) = &self.endpoint {
            config = config.endpoint(endpoint);
        }
        if let Some(n) = self.list_threads {
            config = config.list_parallelism(n as usize);
        }
        if let Some(region) = &self.region {
            config = config.region(region);
        }
        if let Some(file) = &self.access_file {
            config = config.access_file(file);
        }
        if let Some(id) = &self.access_id {
            config = config.access_key_id(id);
        }
        if let Ok(Some(secret)) = self.secret_from_env() {
            config = config.secret_access_key(secret);
        }
        if let Some(role) = &self.instance_credentials {
            let instance = InstanceCredentials { role: role.clone(), imdsv2_only: self.imdsv2_only };
            config = config.instance_credentials(instance);
        }
        if let Some(prefix) = self.key_prefix(url) {
            config = config.prefix(prefix);
        }
        config
    }

    /// Where the password comes from without asking: `--password-file`,
    /// else [`PASSWORD_ENV`] when set; `None` means a prompt is needed.
    pub fn password_source(&self) -> Option<PasswordSource> {
        if let Some(file) = &self.password_file {
            return Some(PasswordSource::File(file.clone()));
        }
        std::env::var_os(PASSWORD_ENV).map(|_| PasswordSource::env())
    }

    /// Whether the volume under `opened` needs a password to open: with
    /// `--encrypt`, or when its descriptor says it is encrypted (one GET).
    pub async fn needs_password(&self, opened: &OpenedStore) -> Result<bool> {
        if self.encrypt.is_some() {
            return Ok(true);
        }
        let descriptor = read_descriptor(opened.store.as_ref(), &opened.prefix).await?;
        Ok(descriptor.is_some_and(|d| d.is_encrypted()))
    }

    /// The encryption to open the volume under `opened` with: `None` when
    /// it is not encrypted (and `--encrypt` was not given); otherwise the
    /// password from [`password_source`](Self::password_source), else from
    /// `prompt`. `what` names the volume in the prompt.
    pub async fn open_encryption(
        &self,
        opened: &OpenedStore,
        what: &str,
        prompt: PasswordPrompt<'_>,
    ) -> Result<Option<EncryptionOptions>> {
        if !self.needs_password(opened).await? {
            return Ok(None);
        }
        let password = self.password(what, false, prompt)?;
        Ok(Some(self.options_with(password, opened)))
    }

    /// The encryption to create a volume with: `None` without `--encrypt`;
    /// otherwise as [`open_encryption`](Self::open_encryption), and a
    /// prompt asks twice.
    pub fn create_encryption(
        &self,
        opened: &OpenedStore,
        what: &str,
        prompt: PasswordPrompt<'_>,
    ) -> Result<Option<EncryptionOptions>> {
        if self.encrypt.is_none() {
            return Ok(None);
        }
        let password = self.password(what, true, prompt)?;
        Ok(Some(self.options_with(password, opened)))
    }

    /// Encryption options with this password for the store `opened`, with
    /// the scheme `--encrypt` named (if any).
    pub fn options_with(&self, password: Password, opened: &OpenedStore) -> EncryptionOptions {
        let mut options = EncryptionOptions::new(password, Self::bucket_name(&opened.kind));
        options.scheme = self.encrypt.flatten();
        options
    }

    /// The password: from the file or environment, else asked (twice when
    /// `confirm`). Without a terminal the error says how to give it.
    pub fn password(&self, what: &str, confirm: bool, prompt: PasswordPrompt<'_>) -> Result<Password> {
        obtain_password(self.password_source().as_ref(), Some(prompt), what, confirm)
    }

    /// A prompt for [`password`](Self::password) that refuses to ask when
    /// standard input is not a terminal, and otherwise asks with `read`
    /// (a no-echo reader such as `rpassword::prompt_password`).
    pub fn terminal_prompt(
        read: impl Fn(&str) -> std::io::Result<String>,
    ) -> impl FnMut(&str) -> std::io::Result<String> {
        move |text| {
            use std::io::IsTerminal;
            if !std::io::stdin().is_terminal() {
                return Err(std::io::Error::other("standard input is not a terminal to ask on"));
            }
            read(text)
        }
    }

    /// The bucket name the s3backer scheme's key is derived with: the S3
    /// bucket; for a local directory its last path component; `memory` for memory.
    pub fn bucket_name(kind: &StoreKind) -> String {
        kind.encryption_bucket_name()
    }
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
