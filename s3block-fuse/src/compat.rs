//! s3backer's options that s3block does not implement, named plainly.
//!
//! A script or fstab line written for s3backer 2.1.6 may carry any of its
//! options. Those s3block implements are aliases of its own (`--blockSize`,
//! `--readOnly`, ...). For the others clap would answer with a suggestion
//! of some unrelated flag (`--reset-mounted-flag` → `--ro`), so they are
//! recognised here, before parsing, and refused with "s3backer option --X
//! is not supported by s3block (yet)", with what to use instead where
//! s3block has an equivalent.

/// s3backer 2.1.6 options that s3block does not implement, each with what
/// to use instead (empty when there is nothing to suggest).
const UNSUPPORTED: &[(&str, &str)] = &[
    ("accessId", "give the key in AWS_ACCESS_KEY_ID or an access file (--access-file)"),
    ("accessKey", "give the key in AWS_SECRET_ACCESS_KEY or an access file (--access-file)"),
    ("accessKeyEnv", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    ("accessType", ""),
    ("accessEC2IAM", ""),
    ("accessEC2IAM-IMDSv2", ""),
    ("authVersion", "s3block always signs with AWS signature version 4"),
    ("blockCacheFile", "use --cache-dir DIR and --disk-cache-size BYTES: a disk cache directory"),
    ("blockCacheMaxDirty", "use --max-dirty, in bytes"),
    (
        "blockCacheNoVerify",
        "--cache-dir needs no verification: it is checked against the bucket's record of the last mount",
    ),
    ("blockCacheThreads", "use --upload-concurrency"),
    ("blockCacheTimeout", ""),
    ("blockCacheWriteDelay", ""),
    ("blockCacheSync", "fsync decides: --durability remote (the default) or local"),
    ("blockCacheRecoverDirtyBlocks", "with --cache-dir, dirty blocks are always recovered after a crash"),
    ("blockCacheNumProtected", ""),
    ("blockCacheFileAdvise", ""),
    ("cacert", ""),
    ("configFile", "put the options in fstab form, -o opt,opt"),
    ("debug-http", "use --debug"),
    ("defaultContentEncoding", ""),
    ("erase", "use `s3block erase STORE`"),
    ("force", ""),
    ("http11", ""),
    ("initialRetryPause", ""),
    ("insecure", ""),
    ("keyLength", ""),
    ("listBlocksThreads", ""),
    ("maxUploadSpeed", ""),
    ("maxDownloadSpeed", ""),
    ("maxRetryPause", ""),
    ("minWriteDelay", ""),
    ("md5CacheSize", ""),
    ("md5CacheTime", ""),
    ("nbd", "serve the volume with `s3block-nbd STORE` (the same options) and attach it with nbd-client"),
    ("nbd-flag", "s3block-nbd serves NBD itself, without nbdkit"),
    ("nbd-param", "s3block-nbd serves NBD itself, without nbdkit"),
    ("noAutoDetect", ""),
    ("noCurlCache", ""),
    ("quiet", ""),
    ("readAhead", "use --read-ahead, in bytes"),
    ("readAheadTrigger", ""),
    ("reset-mounted-flag", "use `s3block unlock STORE`"),
    ("sharedDiskMode", ""),
    ("sse", ""),
    ("sse-key-id", ""),
    ("ssl", "give an https:// --endpoint"),
    ("statsFileMirror", ""),
    ("statsFileMirrorInterval", ""),
    ("storageClass", ""),
    ("test", "a file:///dir store keeps the volume in a local directory"),
    ("test-delays", ""),
    ("test-discard", ""),
    ("test-errors", ""),
    ("timeout", ""),
    ("vhost", ""),
    ("no-vhost", ""),
];

/// The message for `--name` (or `-o name`) when it is an s3backer option
/// s3block does not implement; `None` otherwise.
pub(crate) fn unsupported(name: &str) -> Option<String> {
    let (name, instead) = UNSUPPORTED.iter().find(|(n, _)| *n == name)?;
    let mut message = format!("s3backer option --{name} is not supported by s3block (yet)");
    if !instead.is_empty() {
        message.push_str("; ");
        message.push_str(instead);
    }
    Some(message)
}

/// The option name of a command-line argument `--name[=value]`.
pub(crate) fn long_name(arg: &str) -> Option<&str> {
    let rest = arg.strip_prefix("--")?;
    let name = rest.split_once('=').map_or(rest, |(n, _)| n);
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_options_are_named_with_what_to_use() {
        let m = unsupported("reset-mounted-flag").unwrap();
        assert_eq!(
            m,
            "s3backer option --reset-mounted-flag is not supported by s3block (yet); use `s3block unlock STORE`"
        );
        assert_eq!(
            unsupported("timeout").unwrap(),
            "s3backer option --timeout is not supported by s3block (yet)"
        );
        let nbd = unsupported("nbd").unwrap();
        assert!(
            nbd.starts_with("s3backer option --nbd is not supported") && nbd.contains("s3block-nbd STORE"),
            "{nbd}"
        );
        assert!(unsupported("blockSize").is_none());
        assert!(unsupported("size").is_none());
        assert_eq!(long_name("--ssl"), Some("ssl"));
        assert_eq!(long_name("--timeout=30"), Some("timeout"));
        assert_eq!(long_name("-f"), None);
        assert_eq!(long_name("--"), None);
    }
}
